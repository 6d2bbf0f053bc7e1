"""Where a weak data set's rows come from, read as streams: the labels file, the image folder's listing (file names
may carry the label), the class list; and the checks on a row's image path. pipeline.data.weak validates the rows
and stores them (pipeline.data.record_table)."""
from __future__ import annotations

import contextlib
import csv
import os
import re
import sqlite3
from pathlib import Path, PurePosixPath
from typing import Iterator

from pipeline.config import DataConfig
from pipeline.data import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_labels_csv(path: Path) -> Iterator[tuple[str, str, int]]:
    """(image path, label, line) of each row of a labels file, streamed."""
    line = 1
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip().lower() for h in header[:2]] != ["image", "label"]:
                raise DatasetError(f"{path}:1: expected the header 'image,label', got {header!r}")
            for row in reader:
                line = reader.line_num
                if not row or not "".join(row).strip():
                    continue
                if len(row) != 2 or not row[0].strip() or not row[1].strip():
                    raise DatasetError(f"{path}:{line}: expected 'image,label' (one label per image), got {row!r}")
                yield row[0].strip(), row[1].strip(), line
    except csv.Error as err:
        raise DatasetError(f"{path}:{line}: not valid CSV ({err})") from None
    except UnicodeDecodeError:
        read_text(path)  # raises the DatasetError naming the line and byte
        raise


def read_text(path: Path) -> str:
    """UTF-8 text (a leading BOM dropped); DatasetError names the file, line and byte of invalid UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text (byte {err.start}: {err.reason})") from None


def read_classes(path: Path) -> tuple[str, ...]:
    names = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{path}: class list is empty")
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}: class names repeat")
    if len(names) > 255:
        raise DatasetError(f"{path}: {len(names)} classes do not fit uint8 masks (at most 255 with 255 = ignore)")
    return tuple(names)


def list_images(image_dir: Path) -> Iterator[tuple[str, Path]]:
    """(path relative to `image_dir`, path) of every image below it, hidden names skipped, in the order of sorted
    Paths (a folder's entries by name, a sub-folder's images at its name's place). Each folder's names are sorted
    in a temporary SQLite file (UTF-8 byte order is Python's string order), so a folder of a million images is
    listed without a million names in memory."""
    def walk(folder: Path, prefix: str) -> Iterator[tuple[str, Path]]:
        with contextlib.closing(sqlite3.connect("")) as db, os.scandir(folder) as entries:  # "": a temporary file
            db.execute("CREATE TABLE names (name BLOB PRIMARY KEY, is_dir INTEGER)")
            db.executemany("INSERT INTO names VALUES (?, ?)",
                           ((os.fsencode(e.name), e.is_dir() and not e.is_symlink()) for e in entries
                            if not e.name.startswith(".")))
            cursor = db.execute("SELECT name, is_dir FROM names ORDER BY name")
            while rows := cursor.fetchmany(512):
                for raw, is_dir in rows:
                    name = os.fsdecode(raw)
                    path = folder / name
                    if is_dir:
                        yield from walk(path, f"{prefix}{name}/")
                    elif path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                        yield f"{prefix}{name}", path

    return walk(image_dir, "")


def utf8_name(text: str) -> bool:
    """A file name decoded without loss (not a bytes name that Python carries as surrogate escapes)."""
    try:
        text.encode()
        return True
    except UnicodeEncodeError:
        return False


def label_from_name(path: Path, cfg: DataConfig) -> str:
    if cfg.class_agnostic or not cfg.label_pattern:
        return ""
    try:
        match = re.search(cfg.label_pattern, path.stem)
    except re.error as err:
        raise DatasetError(f"data.label_pattern {cfg.label_pattern!r}: not a valid regular expression ({err})") from None
    if not match:
        raise DatasetError(f"{path}: file name does not match data.label_pattern {cfg.label_pattern!r}")
    if match.re.groups < 1:
        raise DatasetError(f"data.label_pattern {cfg.label_pattern!r}: needs a group (...) capturing the class name")
    return (match.group(1) or "").strip()


def leaves_folder(rel: str) -> bool:
    """A labels row's image path is absolute or has a '..' part or a NUL: it would leave the image folder."""
    return PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts or "\0" in rel


def too_long(stem: str) -> bool:
    return len(f"{stem}.npz".encode()) > 255


def stem_of(rel: str) -> str:
    """Output id of an image: its path below images/ without suffix, sub-folders joined by '__'."""
    return Path(rel).with_suffix("").as_posix().replace("/", "__")
