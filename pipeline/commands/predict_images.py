"""Segment a folder of the user's own images with a trained network: palette masks and colour overlays.

    model, classes, _ = load_run_model(Path("runs/demo"))                       # pipeline.commands.trained
    summary = predict_folder(model, classes, Path("my_photos"), Path("my_photos_seg"), scales=(0.75, 1.0), flip=True)
    # -> {"images": 12, "written": 12, "skipped": [], "seconds": 3.4}

For every image below `images` (sub-folders allowed; .jpg .jpeg .png .bmp .tif .tiff .webp, any case; hidden files
and folders skipped; sorted by path) it writes
    out/<stem>.png           palette PNG of class ids (pipeline.io.save_mask; 0 = background)
    out/<stem>_overlay.jpg   the image with every non-background pixel blended 50/50 with its class colour
                             (background pixels keep the image's own colour, so the objects stand out)
where <stem> is the path below `images` without suffix, sub-folders joined by "__" (as the weak data set names its
outputs; names with spaces are kept). Two inputs that map to one stem (`a/b.jpg` and `a__b.png`) raise ValueError.
Images whose two outputs both exist are skipped (resume after a kill); each file is written atomically. An
unreadable image (empty, truncated, not an image, more than `max_pixels`) raises pipeline.io.ImageError naming it;
with `skip_bad` it is instead listed in `out/skipped.json` (`[{"file", "reason"}]`, rewritten by every call, so it
lists what the last call could not read) and on stderr, and the other images are segmented. Prediction is pipeline.learn.inference.predict_probs (softmax
averaged over `scales` and, with `flip`, horizontal flips; `window` > 0 slides square windows over large images);
with `crf` (a CRFConfig, e.g. the run's `Config.crf_for_round(k)`) the dense CRF (pipeline.crf.refine_probs) refines
each image's probabilities before the arg-max. `coarse2fine predict --run` takes the run's own `test_time.scales` and
`test_time.flip` unless flags are given (`prediction_settings`).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from pipeline.config import Config, CRFConfig
from pipeline.crf import refine_probs
from pipeline.data.weak_rows import IMAGE_SUFFIXES
from pipeline.learn.inference import predict_probs
from pipeline.io import ImageError, palette, read_image, save_image, save_mask, write_json

OVERLAY_ALPHA = 0.5  # weight of the class colour in the overlay
OVERLAY_QUALITY = 90  # JPEG quality of the overlays
SKIPPED_FILE = "skipped.json"  # in the output folder, with skip_bad: the images that could not be read

_COLOURS = np.asarray(palette(), np.uint8).reshape(256, 3)


def list_images(images: Path, exclude: Path | None = None) -> list[tuple[str, Path]]:
    """(stem, path) of every image below `images`, sorted by path; files below `exclude` are left out."""
    images = Path(images)
    if not images.is_dir():
        raise FileNotFoundError(f"{images}: image folder not found")
    skip = exclude.resolve() if exclude is not None else None
    found: dict[str, Path] = {}
    for path in sorted(images.rglob("*")):
        rel = path.relative_to(images)
        if path.suffix.lower() not in IMAGE_SUFFIXES or any(p.startswith(".") for p in rel.parts):
            continue
        if not path.is_file() or (skip is not None and path.resolve().is_relative_to(skip)):
            continue
        stem = rel.with_suffix("").as_posix().replace("/", "__")
        if stem in found:
            raise ValueError(f"{path}: output name {stem!r} is also that of {found[stem]}; rename one of them")
        found[stem] = path
    return list(found.items())


def colorize(mask: np.ndarray) -> np.ndarray:
    """Class-id mask uint8 [H, W] -> RGB uint8 [H, W, 3] in the palette colours (255 = ignore, light grey)."""
    return _COLOURS[mask]


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """`image` with every pixel whose class is not 0 blended with its class colour (weight `alpha`)."""
    if image.shape[:2] != mask.shape:
        raise ValueError(f"overlay: image {image.shape[:2]} and mask {mask.shape} differ in size")
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colorize(mask).astype(np.float32)
    out = np.where((mask != 0)[..., None], blend, image.astype(np.float32))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def prediction_settings(cfg: Config, scales: Sequence[float] | None, flip: bool | None) -> tuple[tuple[float, ...],
                                                                                                bool]:
    """(scales, flip) a run's network predicts new images with: the run's `test_time` settings, each replaced by
    the flag the user gave (None: not given)."""
    return (tuple(cfg.test_time.scales) if scales is None else tuple(scales),
            cfg.test_time.flip if flip is None else bool(flip))


def predict_folder(model: nn.Module, classes: Sequence[str], images: Path, out: Path, *,
                   scales: Sequence[float] = (1.0,), flip: bool = False, device: str = "cpu",
                   window: int = 0, max_pixels: int = 40_000_000, skip_bad: bool = False,
                   crf: CRFConfig | None = None) -> dict:
    """Write out/<stem>.png and out/<stem>_overlay.jpg for every image below `images`; see the module docstring.

    Returns {"images", "written", "skipped": [{"file", "reason"}] (empty without `skip_bad`), "seconds"}."""
    start = time.time()
    images, out = Path(images), Path(out)
    todo = list_images(images, exclude=out)
    if not todo:
        raise FileNotFoundError(f"{images}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    out.mkdir(parents=True, exist_ok=True)
    model = model.to(torch.device(device)).eval()
    written, skipped = 0, []
    for stem, path in todo:
        mask_path, overlay_path = out / f"{stem}.png", out / f"{stem}_overlay.jpg"
        if mask_path.is_file() and overlay_path.is_file():
            continue
        try:
            image = read_image(path, max_pixels)
        except ImageError as err:
            if not skip_bad:
                raise
            skipped.append({"file": str(path), "reason": str(err).removeprefix(f"{path}: ")})
            print(f"skipped: {err}", file=sys.stderr, flush=True)
            continue
        probs = predict_probs(model, image, scales=scales, flip=flip, window=window, device=device)
        if crf is not None:
            probs = refine_probs(image, probs, crf)
        if probs.shape[0] != len(classes):
            raise ValueError(f"model predicts {probs.shape[0]} classes but {len(classes)} class names were given")
        mask = np.argmax(probs, axis=0).astype(np.uint8)
        save_mask(mask_path, mask)
        save_image(overlay_path, overlay(image, mask), fmt="JPEG", quality=OVERLAY_QUALITY)
        written += 1
    if skip_bad or (out / SKIPPED_FILE).is_file():
        write_json(out / SKIPPED_FILE, skipped)
    return {"images": len(todo), "written": written, "skipped": skipped, "seconds": round(time.time() - start, 2)}
