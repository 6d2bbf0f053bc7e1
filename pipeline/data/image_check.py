"""Decode every image of a data set once, before any stage runs, so that stages never meet an unreadable image.

    problems = check_images(paths, max_pixels, cache=run_dir / "images_checked.json")   # one entry per path
    # -> [None, "<path>: cannot decode image (image file is truncated ...)", None, ...]

A header check alone (pipeline.io.image_size) misses files whose header is intact but whose pixel data is not (a JPEG
or PNG cut short): Pillow opens them and only fails when a stage decodes the pixels, deep inside a run. Here each
image is decoded with the very function the stages use (pipeline.io.read_image), in a few threads (Pillow's decoders
release the GIL), so whatever passes here reads in every stage.

`cache` (optional, a JSON file) remembers the images that decoded, by absolute path, size and modification time, so
a rerun of a large data set decodes only new or changed files; the header checks (missing, empty, too large for
`max_pixels`) run every time because they are cheap and depend on `max_pixels`. The cache is only an optimisation:
a missing or damaged cache file is ignored and rewritten.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from pipeline.io import ImageError, image_size, read_image, read_json, write_json

CHECK_THREADS = min(8, os.cpu_count() or 1)  # decoders release the GIL; more threads than this gain little
CACHE_VERSION = 1
PROGRESS_EVERY_S = 5.0  # a progress line on stderr this often while a large data set is checked


def _stat_key(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _load_cache(cache: Path | None) -> dict[str, list[int]]:
    if cache is None or not cache.is_file():
        return {}
    try:
        data = read_json(cache)
    except (OSError, ValueError):  # only a cache: a damaged one is rebuilt
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("images"), dict):
        return {}
    return data["images"]


def check_image(path: Path, max_pixels: int, known: dict[str, list[int]]) -> tuple[str | None, list[int] | None]:
    """(None, stat key) when `path` reads as an image, else (the ImageError message naming it, None).

    The stat key (size, mtime) is what the cache stores; an image whose absolute path maps to its current key in
    `known` is not decoded again."""
    try:
        image_size(path, max_pixels)  # missing, empty, not an image, too large: from the header
        key = _stat_key(path)
        if key is None or known.get(os.path.abspath(path)) != key:
            read_image(path, max_pixels)  # the pixels, decoded as every stage will decode them
        return None, key
    except ImageError as err:
        return str(err), None


def check_images(paths: Sequence[Path], max_pixels: int, cache: Path | None = None) -> list[str | None]:
    """For each path, None when it reads as an image, else the error naming it; see the module docstring."""
    known = _load_cache(cache)
    results: list[str | None] = []
    good: dict[str, list[int]] = {}
    start = last = time.time()
    with ThreadPoolExecutor(CHECK_THREADS) as pool:
        checked = pool.map(lambda p: check_image(p, max_pixels, known), paths)
        for i, (path, (reason, key)) in enumerate(zip(paths, checked)):
            results.append(reason)
            if key is not None:
                good[os.path.abspath(path)] = key
            if time.time() - last >= PROGRESS_EVERY_S:
                last = time.time()
                print(f"  checking images: {i + 1}/{len(paths)} ({(i + 1) / (last - start):.0f}/s)",
                      file=sys.stderr, flush=True)
    if cache is not None and good != known:
        write_json(cache, {"version": CACHE_VERSION, "images": good})
    return results
