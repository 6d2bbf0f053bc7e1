"""Stage `coarse`: a foreground probability per image from image-level labels only (the first stage of a run).

    summary = run(ctx, src=None, dst=run_dir / "coarse")

For every record this writes `dst/<stem>.npz` = save_probs([1 - p, p], class_ids=[0, record.label]), p being the
foreground probability at the image's full resolution, and then `dst/<stem>.png` = soft_to_mask(...) with
`coarse.fg_threshold` / `coarse.bg_threshold` (between the two: 255, ignored by training). `coarse.method`:

- `saliency`: per-image, one Ray task per image (`pipeline.orchestration.parallel.map_tasks`), tasks get paths + config only.
- `ddt`, `cam`, `isnet`: CNN methods (DDT statistics per label group, CAM's classifier fine-tuned on all labels,
  ISNet's salient-object map) run in one device task (`pipeline.orchestration.parallel.run_on_device`) that writes
  the per-image files itself.
- `fusion`: every method in `coarse.fusion` writes its maps into `dst/_parts/<method>/` (same file contract, so each
  part resumes on its own), then per-image tasks write the geometric mean of the parts' probabilities. With `isnet`
  among them (`[isnet, ddt]`), the other parts are class evidence that picks the label's objects among ISNet's
  salient ones (`pipeline.coarse.fusion.steer_salient`).

Resuming: an image whose `dst/<stem>.png` exists is skipped (`pipeline.stage.pending`). Group methods keep their
per-group results (DDT mean / principal component per label, CAM classifier weights) as small files under
`dst/_ddt` / `dst/_cam`, so a resumed run reuses them instead of redoing them.
Class-agnostic data (`data.class_agnostic`) arrives with every record labelled 1; DDT then forms one group of all
images (or per-image groups with `coarse.ddt_groups: image`). Every method is deterministic for a fixed `run.seed`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import CoarseConfig
from pipeline.io import IGNORE, load_probs, read_image, save_mask, save_probs
from pipeline.labels import soft_to_mask
from pipeline.orchestration.parallel import map_tasks, run_on_device
from pipeline.stage import Record, StageContext, pending


@dataclass(frozen=True)
class CoarseJob:
    """Everything a per-image task needs: small and picklable, no arrays."""

    stem: str
    image: str  # path of the RGB image
    label: int  # the image's class id (>= 1)
    dst: str  # folder receiving <stem>.npz then <stem>.png
    coarse: CoarseConfig
    max_pixels: int  # data.max_pixels: refuse larger images
    seed: int  # run.seed
    parts: tuple[str, ...] = ()  # fusion: folders holding each part's <stem>.npz


def write_coarse(dst: Path, stem: str, label: int, prob: np.ndarray, cfg: CoarseConfig) -> np.ndarray:
    """Write `dst/<stem>.npz` (probs [1 - p, p] over [0, label]) then `dst/<stem>.png`; returns the mask."""
    prob = np.clip(np.asarray(prob, np.float32), 0.0, 1.0)
    probs = np.stack([1.0 - prob, prob])
    class_ids = np.array([0, label], np.int32)
    save_probs(dst / f"{stem}.npz", probs, class_ids)
    # Threshold the map as stored (uint8-rounded) so the .png always agrees with what the next stage reads.
    stored, _ = load_probs(dst / f"{stem}.npz")
    mask = soft_to_mask(stored, class_ids, cfg.fg_threshold, cfg.bg_threshold)
    save_mask(dst / f"{stem}.png", mask)  # written last: marks the image done
    return mask


def _mask_stats(stem: str, mask: np.ndarray) -> dict:
    """Small per-image summary: share of confident foreground and of ignored pixels."""
    return {"stem": stem, "fg": float(((mask != 0) & (mask != IGNORE)).mean()), "ignore": float((mask == IGNORE).mean())}


def saliency_one(job: CoarseJob) -> dict:
    """Per-image task: saliency map of one image into `job.dst`."""
    from pipeline.coarse.saliency import saliency_foreground

    image = read_image(job.image, job.max_pixels)
    prob = saliency_foreground(image, seed=job.seed)
    mask = write_coarse(Path(job.dst), job.stem, job.label, prob, job.coarse)
    return _mask_stats(job.stem, mask)


def fuse_one(job: CoarseJob) -> dict:
    """Per-image task: the parts' foreground probabilities fused into `job.dst`: their geometric mean, or, with
    `isnet` among them, ISNet's salient objects steered by the other parts' class evidence."""
    from pipeline.coarse.fusion import geometric_mean, steer_salient

    maps = []
    for part in job.parts:
        path = Path(part) / f"{job.stem}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: fusion part missing for image {job.image}")
        maps.append(load_probs(path)[0][1])
    names = [Path(part).name for part in job.parts]
    if "isnet" in names and len(names) > 1:
        salient = maps.pop(names.index("isnet"))
        prob = steer_salient(salient, maps)
    else:
        prob = geometric_mean(maps)
    mask = write_coarse(Path(job.dst), job.stem, job.label, prob, job.coarse)
    return _mask_stats(job.stem, mask)


def _device_task(method: str, records: tuple[Record, ...], num_classes: int, dst: str, cfg: CoarseConfig,
                 max_pixels: int, seed: int) -> list[dict]:
    """Device task for `ddt` / `cam` / `isnet`: computes every pending image's map of `records`, writes it into `dst`."""
    import torch

    torch.manual_seed(seed)
    if method == "isnet":
        from pipeline.coarse.salient import isnet_maps

        maps = isnet_maps(records, Path(dst), cfg.isnet_weights, max_pixels)
    elif method == "ddt":
        from pipeline.coarse.ddt import ddt_maps

        maps = ddt_maps(records, Path(dst), cfg, max_pixels, seed)
    elif method == "cam":
        from pipeline.coarse.cam import cam_maps

        maps = cam_maps(records, num_classes, Path(dst), cfg, max_pixels, seed)
    else:
        raise ValueError(f"coarse.method: {method!r} is not a device method (ddt, cam, isnet)")
    results = []
    for record, prob in maps:  # maps yields only pending records, one at a time (bounded memory)
        mask = write_coarse(Path(dst), record.stem, record.label, prob, cfg)
        results.append(_mask_stats(record.stem, mask))
    return results


def _run_method(method: str, ctx: StageContext, dst: Path) -> list[dict]:
    """Run one base method (saliency, ddt, cam, isnet) for the records still pending in `dst`."""
    dst.mkdir(parents=True, exist_ok=True)
    todo = pending(ctx.records, dst)
    if not todo:
        return []
    cfg = ctx.cfg
    if method == "saliency":
        jobs = [CoarseJob(stem=r.stem, image=str(r.image), label=int(r.label), dst=str(dst), coarse=cfg.coarse,
                          max_pixels=cfg.data.max_pixels, seed=cfg.run.seed) for r in todo]
        return map_tasks(saliency_one, jobs, cfg.ray, desc=f"coarse saliency {dst.name}")
    if method in ("ddt", "cam", "isnet"):
        # Group statistics need every record of a group, finished or not; the task writes only pending ones.
        return run_on_device(_device_task, method, tuple(ctx.records), len(ctx.classes), str(dst), cfg.coarse,
                             cfg.data.max_pixels, cfg.run.seed, cfg=cfg.ray)
    raise ValueError(f"coarse.fusion: unknown method {method!r} (choose from saliency, ddt, cam, isnet)")


def run(ctx: StageContext, src: None, dst: Path) -> dict:
    """Write every pending record's coarse map into `dst`; returns images done/skipped, seconds, fg/ignore shares."""
    start = time.time()
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    cfg = ctx.cfg
    for r in ctx.records:
        if r.label < 1 or r.label >= len(ctx.classes):
            raise ValueError(f"{r.image}: label {r.label} is not a foreground class id 1..{len(ctx.classes) - 1}")
    todo = pending(ctx.records, dst)
    method = cfg.coarse.method
    if method == "fusion":
        if not cfg.coarse.fusion:
            raise ValueError("coarse.fusion: needs at least one method to fuse")
        parts = []
        for part in cfg.coarse.fusion:
            if part == "fusion":
                raise ValueError("coarse.fusion: cannot contain 'fusion' itself")
            part_dir = dst / "_parts" / part
            if todo:
                _run_method(part, ctx, part_dir)
            parts.append(str(part_dir))
        jobs = [CoarseJob(stem=r.stem, image=str(r.image), label=int(r.label), dst=str(dst), coarse=cfg.coarse,
                          max_pixels=cfg.data.max_pixels, seed=cfg.run.seed, parts=tuple(parts)) for r in todo]
        results = map_tasks(fuse_one, jobs, cfg.ray, desc="coarse fusion")
    else:
        results = _run_method(method, ctx, dst)
    return {
        "method": method,
        "images": len(results),
        "skipped": len(ctx.records) - len(todo),
        "seconds": round(time.time() - start, 2),
        "mean_fg_fraction": round(float(np.mean([r["fg"] for r in results])), 4) if results else 0.0,
        "mean_ignore_fraction": round(float(np.mean([r["ignore"] for r in results])), 4) if results else 0.0,
    }
