"""Decode every image of a data set once, before any stage runs, so that stages never meet an unreadable image.

    with ImageChecker(max_pixels, cache=run_dir / "images_checked.sqlite") as checker:
        problems = checker.check(paths)   # one entry per path, a chunk at a time
    # -> [None, "<path>: cannot decode image (image file is truncated ...)", None, ...]

A header check alone (pipeline.io.image_size) misses files whose header is intact but whose pixel data is not (a JPEG
or PNG cut short): Pillow opens them and only fails when a stage decodes the pixels, deep inside a run. Here each
image is decoded with the very function the stages use (pipeline.io.read_image), in a few threads (Pillow's decoders
release the GIL), so whatever passes here reads in every stage.

`cache` (optional, a SQLite file) remembers the images that decoded, by absolute path, size and modification time, so
a rerun of a large data set decodes only new or changed files; the header checks (missing, empty, too large for
`max_pixels`) run every time because they are cheap and depend on `max_pixels`. The cache is only an optimisation:
a missing or damaged cache file is ignored and rewritten. It lives on disk, not in memory, like the records
(pipeline.data.record_table), so checking N images holds one chunk of them at a time.
"""
from __future__ import annotations

import os
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from pipeline.io import ImageError, image_size, read_image

CHECK_THREADS = min(8, os.cpu_count() or 1)  # decoders release the GIL; more threads than this gain little
CACHE_VERSION = 2  # 2: SQLite (1 was JSON)
PROGRESS_EVERY_S = 5.0  # a progress line on stderr this often while a large data set is checked


StatKey = tuple[int, int]  # (size, mtime in ns) of a file


def _stat_key(path: Path) -> StatKey | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def check_image(path: Path, max_pixels: int, known: StatKey | None) -> tuple[str | None, StatKey | None]:
    """(None, stat key) when `path` reads as an image, else (the ImageError message naming it, None).

    The stat key (size, mtime) is what the cache stores; an image whose current key is `known` (the cache's entry
    for it) is not decoded again."""
    try:
        image_size(path, max_pixels)  # missing, empty, not an image, too large: from the header
        key = _stat_key(path)
        if key is None or key != known:
            read_image(path, max_pixels)  # the pixels, decoded as every stage will decode them
        return None, key
    except ImageError as err:
        return str(err), None


class ImageChecker:
    """Checks images chunk by chunk (`check`), with the cache of the module docstring; use it as a context manager:
    the new cache replaces the old one when the block ends without an exception."""

    def __init__(self, max_pixels: int, cache: Path | None = None):
        self.max_pixels, self.cache = max_pixels, cache
        self.done, self.start, self.last = 0, time.time(), time.time()
        self._old = self._new = None
        if cache is not None:
            self._old = _open_cache(cache)
            self._tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
            self._tmp.unlink(missing_ok=True)
            cache.parent.mkdir(parents=True, exist_ok=True)
            self._new = sqlite3.connect(self._tmp, check_same_thread=False)
            self._new.executescript(f"PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA user_version = "
                                    f"{CACHE_VERSION}; CREATE TABLE images (path TEXT PRIMARY KEY, size INTEGER, "
                                    "mtime INTEGER);")
        self._pool = ThreadPoolExecutor(CHECK_THREADS)

    def __enter__(self) -> ImageChecker:
        return self

    def _known(self, path: str) -> StatKey | None:
        if self._old is None:
            return None
        row = self._old.execute("SELECT size, mtime FROM images WHERE path = ?", (path,)).fetchone()
        return None if row is None else (row[0], row[1])

    def check(self, paths: Sequence[Path]) -> list[str | None]:
        """For each path, None when it reads as an image, else the error naming it."""
        absolute = [os.path.abspath(p) for p in paths]
        known = [self._known(a) for a in absolute]  # here: one SQLite connection is not shared between threads
        results = list(self._pool.map(lambda job: check_image(job[0], self.max_pixels, job[1]), zip(paths, known)))
        if self._new is not None:
            self._new.executemany("INSERT OR REPLACE INTO images VALUES (?, ?, ?)",
                                  [(a, *key) for a, (_, key) in zip(absolute, results) if key])
        self.done += len(paths)
        if time.time() - self.last >= PROGRESS_EVERY_S:
            self.last = time.time()
            print(f"  checking images: {self.done} ({self.done / (self.last - self.start):.0f}/s)",
                  file=sys.stderr, flush=True)
        return [reason for reason, _ in results]

    def __exit__(self, kind, error, trace) -> None:
        self._pool.shutdown()
        if self._old is not None:
            self._old.close()
        if self._new is None:
            return
        if kind is None:
            self._new.commit()
        self._new.close()
        if kind is None:
            os.replace(self._tmp, self.cache)
        else:
            self._tmp.unlink(missing_ok=True)


def _open_cache(cache: Path) -> sqlite3.Connection | None:
    """The cache's connection, or None when it is missing, damaged or of another version (then it is rebuilt)."""
    if not cache.is_file():
        return None
    try:
        db = sqlite3.connect(f"{cache.absolute().as_uri()}?mode=ro", uri=True, check_same_thread=False)
        if db.execute("PRAGMA user_version").fetchone()[0] != CACHE_VERSION:
            db.close()
            return None
        db.execute("SELECT path, size, mtime FROM images LIMIT 1").fetchall()
        return db
    except sqlite3.DatabaseError:  # not a SQLite file, or not ours: only a cache, rebuilt
        return None
