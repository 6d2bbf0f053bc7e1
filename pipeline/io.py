"""Per-image files that stages hand to each other, all written atomically (temp file + rename).

Formats:
- `<stem>.png`      palette PNG of class ids (0 = background, 255 = ignore); the hard mask of a stage.
- `<stem>.npz`      soft map: `probs` uint8 [K, H, W] (probability x 255) over `class_ids` int [K]; classes not
                    stored have probability ~0. Coarse maps hold K = 2 (background, the image's label).
- `manifest.json`   what a stage folder was made from; `DONE` is written last, so a folder without it is unfinished.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

IGNORE = 255  # mask value for "not labelled / uncertain": never trained on, never scored


class ImageError(ValueError):
    """An input image or mask cannot be used; the message names the file and the reason."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers only ever see the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def palette() -> list[int]:
    """PASCAL VOC colour map (class i -> RGB), 256 entries; 255 (ignore) is light grey."""
    pal = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = (r, g, b)
    pal[IGNORE] = (224, 224, 192)
    return pal.flatten().tolist()


_PALETTE = palette()


def save_mask(path: str | Path, mask: np.ndarray) -> None:
    """Save a uint8 class-id mask as a palette PNG."""
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"{path}: mask must be 2-D uint8, got {mask.dtype} {mask.shape}")
    img = Image.fromarray(mask, mode="P")
    img.putpalette(_PALETTE)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def load_mask(path: str | Path) -> np.ndarray:
    """Read a class-id mask (palette or 8-bit grey PNG) as uint8 [H, W]."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L"):
                if img.mode in ("I", "I;16", "I;16B", "I;16L"):
                    arr = np.asarray(img)
                    if arr.max(initial=0) > 255:
                        raise ImageError(f"{path}: mask values up to {arr.max()} do not fit class ids 0-255")
                    return arr.astype(np.uint8)
                raise ImageError(f"{path}: mask must be a palette or grey PNG, got mode {img.mode}")
            return np.array(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageError(f"{path}: cannot read mask ({err})") from None


def read_image(path: str | Path, max_pixels: int = 40_000_000) -> np.ndarray:
    """Read any PIL-readable image as RGB uint8 [H, W, 3]; grey, RGBA and 16-bit inputs are converted."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: image file not found")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: image file is empty (0 bytes)")
    try:
        with Image.open(path) as img:
            if img.width * img.height > max_pixels:
                raise ImageError(f"{path}: {img.width}x{img.height} is larger than data.max_pixels={max_pixels}")
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img).astype(np.float64)
                arr = (arr * 255.0 / max(arr.max(), 1.0)).astype(np.uint8)
                return np.ascontiguousarray(np.stack([arr] * 3, axis=-1))
            return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: cannot decode image ({err})") from None


def save_image(path: str | Path, image: np.ndarray, fmt: str = "PNG", **kw: Any) -> None:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **kw)
    atomic_write_bytes(path, buf.getvalue())


def save_probs(path: str | Path, probs: np.ndarray, class_ids: np.ndarray | list[int]) -> None:
    """Save a soft map: probs float [K, H, W] in [0, 1] (or uint8) over class_ids [K]."""
    probs = np.asarray(probs)
    if probs.dtype != np.uint8:
        probs = np.clip(np.rint(probs * 255.0), 0, 255).astype(np.uint8)
    class_ids = np.asarray(class_ids, dtype=np.int32)
    if probs.ndim != 3 or probs.shape[0] != len(class_ids):
        raise ValueError(f"{path}: probs {probs.shape} do not match {len(class_ids)} class ids")
    buf = io.BytesIO()
    np.savez_compressed(buf, probs=probs, class_ids=class_ids)
    atomic_write_bytes(path, buf.getvalue())


def load_probs(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Return (probs float32 [K, H, W] summing to ~1 over K, class_ids int32 [K])."""
    with np.load(path, allow_pickle=False) as f:
        probs = f["probs"].astype(np.float32) / 255.0
        class_ids = f["class_ids"].astype(np.int32)
    return probs, class_ids


def probs_to_mask(probs: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """Arg-max of a soft map as a uint8 class-id mask."""
    return np.asarray(class_ids, np.int32)[np.argmax(probs, axis=0)].astype(np.uint8)
