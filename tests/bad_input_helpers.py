"""Shared by the bad-input tests: tiny images written by hand or by Pillow, and tiny weak-label data sets."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.config import DataConfig

CLASSES = ("background", "cat", "dog")


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, raw_rows: bytes | None) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB); raw_rows None = header only (no pixel data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0))
    if raw_rows is not None:
        out += chunk(b"IDAT", zlib.compress(raw_rows))
    return out + chunk(b"IEND", b"")


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


def image(value: int = 90, h: int = 6, w: int = 8) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def weak_set(root: Path, images: dict[str, np.ndarray | bytes], rows: list[str] | None,
             classes: tuple[str, ...] | None = CLASSES) -> Path:
    """root/images/<name> (array -> encoded by suffix, bytes -> written as is), labels.csv from rows, classes.txt."""
    for name, content in images.items():
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            Image.fromarray(content).save(path)
    (root / "images").mkdir(parents=True, exist_ok=True)
    if rows is not None:
        (root / "labels.csv").write_text("image,label\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    return root


def data_cfg(root: Path, **kw: object) -> DataConfig:
    return DataConfig(root=str(root), **kw)


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()
