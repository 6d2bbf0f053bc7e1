"""Stage `crf`: dense-CRF refinement of every image's soft map, one Ray task per image (used after `coarse` and after
`predict` in every round).

    summary = run(ctx, src=run_dir / "coarse", dst=run_dir / "coarse_crf")

For each record still pending in `dst` (no `dst/<stem>.png` yet, so a killed run resumes per image) one task reads
the image and `src/<stem>.npz`, refines it with `pipeline.crf.refine_probs`, and writes `dst/<stem>.npz` (the CRF's
marginals over the same class ids) and then `dst/<stem>.png` (the arg-max class; pixels that were 255 in
`src/<stem>.png` stay 255). Without `src/<stem>.npz` the hard mask
`src/<stem>.png` is refined instead, trusted with pipeline.crf.HARD_LABEL_PROB, over background + the image's label + any class
present. Tasks receive only paths and the CRFConfig; `pipeline.orchestration.parallel.stream_tasks` bounds the tasks in flight,
declares `ray.task_memory_mb` per task, retries dead workers and prints progress.
`crf.enabled: false` copies the source files through unchanged.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import CRFConfig
from pipeline.crf import HARD_LABEL_PROB, mask_to_probs, refine_probs
from pipeline.io import IGNORE, atomic_write_bytes, load_mask, load_probs, read_image, save_mask, save_probs
from pipeline.labels import class_argmax
from pipeline.orchestration.parallel import stream_tasks
from pipeline.stage import StageContext, pending


@dataclass(frozen=True)
class CRFJob:
    """Everything one task needs: small, picklable, no arrays."""

    stem: str
    image: str  # path of the RGB image
    label: int  # the image's class id (>= 1)
    src: str  # folder holding <stem>.npz and/or <stem>.png
    dst: str  # folder receiving <stem>.npz then <stem>.png
    crf: CRFConfig
    max_pixels: int  # data.max_pixels: refuse larger images


def _node_id() -> str:
    """The Ray node this task runs on ("local" without Ray), so a run can show where its tasks landed."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()[:12]
    return "local"


def _copy_through(job: CRFJob) -> dict:
    src, dst = Path(job.src), Path(job.dst)
    png = src / f"{job.stem}.png"
    if not png.is_file():
        raise FileNotFoundError(f"{png}: source pseudo-label missing (crf.enabled is false, nothing to copy)")
    if (src / f"{job.stem}.npz").is_file():
        atomic_write_bytes(dst / f"{job.stem}.npz", (src / f"{job.stem}.npz").read_bytes())
    atomic_write_bytes(dst / f"{job.stem}.png", png.read_bytes())  # written last: marks the image done
    return {"stem": job.stem, "changed": 0.0, "node": _node_id()}


def refine_one(job: CRFJob) -> dict:
    """Refine one image's soft map (or hard mask) from `job.src` into `job.dst`; returns a small summary dict."""
    if not job.crf.enabled:
        return _copy_through(job)
    src, dst = Path(job.src), Path(job.dst)
    npz_path, png_path = src / f"{job.stem}.npz", src / f"{job.stem}.png"
    source_mask = load_mask(png_path) if png_path.is_file() else None
    if npz_path.is_file():
        try:
            probs, class_ids = load_probs(npz_path)
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(f"{npz_path}: cannot read soft map ({err})") from None
    elif source_mask is not None:
        present = [int(v) for v in np.unique(source_mask) if v != IGNORE]
        class_ids = np.array(sorted({0, job.label, *present}), np.int32)
        probs = mask_to_probs(source_mask, class_ids, HARD_LABEL_PROB)
    else:
        raise FileNotFoundError(f"{src}: neither {npz_path.name} nor {png_path.name} exists for image {job.image}")
    if source_mask is not None and source_mask.shape != probs.shape[1:]:
        raise ValueError(f"{png_path}: mask {source_mask.shape} and soft map {probs.shape[1:]} differ in size")
    image = read_image(job.image, job.max_pixels)
    try:
        refined = refine_probs(image, probs, job.crf)
    except ValueError as err:
        raise ValueError(f"{job.image}: {err}") from None
    mask = class_argmax(refined, class_ids)
    before = class_argmax(probs, class_ids)
    if source_mask is not None:  # ignore stays ignore
        mask[source_mask == IGNORE] = IGNORE
        before[source_mask == IGNORE] = IGNORE
    save_probs(dst / f"{job.stem}.npz", refined, class_ids)
    save_mask(dst / f"{job.stem}.png", mask)  # written last: marks the image done
    return {"stem": job.stem, "changed": float((mask != before).mean()), "node": _node_id()}


def run(ctx: StageContext, src: Path, dst: Path) -> dict:
    """Refine every pending record's soft map from `src` into `dst`; returns images done/skipped, seconds, change."""
    start = time.time()
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: source stage folder of the crf stage does not exist")
    dst.mkdir(parents=True, exist_ok=True)
    todo = pending(ctx.records, dst)
    jobs = (CRFJob(stem=r.stem, image=str(r.image), label=int(r.label), src=str(src), dst=str(dst),
                   crf=ctx.cfg.crf, max_pixels=ctx.cfg.data.max_pixels) for r in todo)
    images, changed, per_node = 0, 0.0, Counter()  # running sums: nothing kept per image
    for result in stream_tasks(refine_one, jobs, len(todo), ctx.cfg.ray, desc=f"crf {dst.name}"):
        images += 1
        changed += result["changed"]
        per_node[result["node"]] += 1
    return {
        "images": images,
        "skipped": len(ctx.records) - len(todo),
        "seconds": round(time.time() - start, 2),
        "changed_fraction": round(changed / images, 4) if images else 0.0,
        "tasks_per_node": dict(per_node),
    }
