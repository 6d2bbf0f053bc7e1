"""Per-image files that stages hand to each other, all written atomically (temp file + rename).

Formats:
- `<stem>.png`      palette PNG of class ids (0 = background, 255 = ignore); the hard mask of a stage.
- `<stem>.npz`      soft map: `probs` uint8 [K, H, W] (probability x 255) over `class_ids` int [K]; classes not
                    stored have probability ~0. Coarse maps hold K = 2 (background, the image's label).
- `manifest.json`   what a stage folder was made from; `DONE` is written last, so a folder without it is unfinished.
- `per_image.csv`   a scored stage's foreground Jaccard per image (`pipeline.metrics.read_per_image`).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator, TextIO

import numpy as np
from PIL import Image, UnidentifiedImageError

IGNORE = 255  # mask value for "not labelled / uncertain": never trained on, never scored


class ImageError(ValueError):
    """An input image or mask cannot be used; the message names the file and the reason."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` so that readers only ever see the old file or the complete new one."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise OSError(err.errno, f"{path}: cannot write ({err.strerror or err})") from err
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):  # e.g. ENOSPC: same errno (and subclass), message names the target
            raise OSError(err.errno, f"{path}: cannot write ({err.strerror or err})") from err
        raise


@contextlib.contextmanager
def atomic_text_writer(path: str | Path) -> Iterator[TextIO]:
    """A text file to write line by line (e.g. one row per image as results stream in) that appears at `path` only
    complete, when the block ends without an error; an error leaves the old file (or none) and no temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a damaged one raises json.JSONDecodeError (a ValueError) whose message names the file."""
    raw = Path(path).read_bytes()
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise json.JSONDecodeError(f"{path}: not UTF-8 text ({err.reason})", "", 0) from None
    except json.JSONDecodeError as err:
        raise json.JSONDecodeError(f"{path}: not valid JSON ({err.msg})", err.doc, err.pos) from None


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
    """Read a class-id mask (palette, 8-bit grey, 1-bit or 16-bit grey PNG with values <= 255) as uint8 [H, W]."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode == "1":
                return np.asarray(img, dtype=np.uint8)
            if img.mode not in ("P", "L"):
                if img.mode in ("I", "I;16", "I;16B", "I;16L"):
                    arr = np.asarray(img)
                    if arr.max(initial=0) > 255:
                        raise ImageError(f"{path}: mask values up to {arr.max()} do not fit class ids 0-255")
                    return arr.astype(np.uint8)
                raise ImageError(f"{path}: mask must be a palette or grey PNG, got mode {img.mode}")
            return np.array(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, ImageError):
            raise
        raise ImageError(f"{path}: cannot read mask ({err})") from None


def image_size(path: str | Path, max_pixels: int = 40_000_000) -> tuple[int, int]:
    """(height, width) of an image from its header only (no pixel decoding); raises ImageError when the file is
    missing, empty, not an image or larger than `max_pixels` (data.max_pixels)."""
    with _open_image(Path(path), max_pixels) as img:
        return img.height, img.width


def read_image(path: str | Path, max_pixels: int = 40_000_000) -> np.ndarray:
    """Read any PIL-readable image as RGB uint8 [H, W, 3].

    Grey and palette images are repeated/expanded to RGB; alpha is dropped (RGBA (r, g, b, a) -> (r, g, b)); 16-bit
    grey maps 0..65535 linearly to 0..255 (v / 257, rounded), the same for every image.
    """
    path = Path(path)
    with _open_image(path, max_pixels) as img:
        try:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img).astype(np.float64)
                if img.mode == "I" and (arr.min(initial=0) < 0 or arr.max(initial=0) > 65535):
                    raise ImageError(f"{path}: 32-bit integer image with values outside 0..65535 is not supported")
                grey = np.rint(arr / 257.0).astype(np.uint8)
                return np.ascontiguousarray(np.stack([grey] * 3, axis=-1))
            return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))
        except ImageError:
            raise
        except (OSError, SyntaxError, ValueError) as err:
            raise ImageError(f"{path}: cannot decode image ({err})") from None


@contextlib.contextmanager
def _open_image(path: Path, max_pixels: int) -> Iterator[Image.Image]:
    """Image.open with the checks every reader shares; errors name the file and the reason."""
    try:
        if not path.is_file():
            raise ImageError(f"{path}: image file not found")
        size = path.stat().st_size
    except OSError as err:  # e.g. a name too long for the file system
        raise ImageError(f"{path}: cannot open image ({err.strerror or err})") from None
    if size == 0:
        raise ImageError(f"{path}: image file is empty (0 bytes)")
    try:
        img = Image.open(path)
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path}: too many pixels for data.max_pixels={max_pixels} ({err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: cannot decode image ({err})") from None
    with img:
        if img.width * img.height > max_pixels:
            raise ImageError(f"{path}: {img.width}x{img.height} is larger than data.max_pixels={max_pixels}")
        yield img


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
    """Return (probs float32 [K, H, W] summing to ~1 over K, class_ids int32 [K]); ImageError names a bad file."""
    try:
        with np.load(path, allow_pickle=False) as f:
            probs = f["probs"].astype(np.float32) / 255.0
            class_ids = f["class_ids"].astype(np.int32)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise ImageError(f"{path}: cannot read soft map ({type(err).__name__}: {err})") from None
    if probs.ndim != 3 or class_ids.shape != (probs.shape[0],):
        raise ImageError(f"{path}: soft map {probs.shape} does not match class ids {class_ids.shape}")
    return probs, class_ids


def probs_to_mask(probs: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """Arg-max of a soft map as a uint8 class-id mask."""
    return np.asarray(class_ids, np.int32)[np.argmax(probs, axis=0)].astype(np.uint8)
