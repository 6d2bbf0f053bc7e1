"""Stage `evaluate`: score one stage folder's per-image outputs against the ground truth (where it exists).

    scores = run(ctx, src=run_dir / "crf", dst=run_dir / "crf")   # writes dst/scores.json, returns the same dict

What is scored: the arg-max of each image's soft map `src/<stem>.npz` over its stored class ids (every pixel gets a
class, so stages are compared on the same pixels whatever their ignore policy); a folder holding only `<stem>.png`
(e.g. a user's masks) is scored from the PNG, 255 counting as background. Ground truth comes from
`pipeline.data.weak.load_ground_truth` (`data.masks`, `data.gt_foreground_value`, `data.gt_ignore_values`); its
ignore pixels are not scored, records without ground truth are not scored.

Scores (pipeline.metrics): `fg_jaccard` - the mean over images of the foreground Jaccard of the image's labelled
class (prediction == label vs truth == label; the measure of COCO-MVal / GrabCut and the source paper);
`miou`, `pixel_acc`, `per_class_iou` - from one confusion matrix summed over all scored images;
and, in `per_image.csv` beside scores.json, each image's foreground Jaccard (for best/worst galleries and split
halves; `pipeline.metrics.read_per_image`). One Ray task per image returns only its small confusion matrix and
Jaccard.
"""
from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import DataConfig
from pipeline.io import IGNORE, atomic_text_writer, load_mask, load_probs, probs_to_mask, write_json
from pipeline.metrics import (PER_IMAGE_FILE, confusion_matrix, foreground_jaccard, iter_per_image,
                              scores_from_confusion)
from pipeline.orchestration.parallel import stream_tasks
from pipeline.stage import Record, StageContext
from pipeline.data.weak import load_ground_truth


@dataclass(frozen=True)
class ScoreJob:
    record: Record
    src: str  # folder holding <stem>.npz and/or <stem>.png
    data: DataConfig
    num_classes: int


def prediction(src: Path, stem: str) -> np.ndarray:
    """The class-id mask a stage folder predicts for one image: arg-max of its soft map, else its PNG."""
    npz = src / f"{stem}.npz"
    if npz.is_file():
        return probs_to_mask(*load_probs(npz))
    png = src / f"{stem}.png"
    if not png.is_file():
        raise FileNotFoundError(f"{src}: no {stem}.npz or {stem}.png to score")
    mask = load_mask(png)
    return np.where(mask == IGNORE, 0, mask).astype(np.uint8)


def score_one(job: ScoreJob) -> dict | None:
    """Per-image task: confusion matrix and foreground Jaccard of one image (None without ground truth)."""
    gt = load_ground_truth(job.record, job.data, job.num_classes)
    if gt is None:
        return None
    pred = prediction(Path(job.src), job.record.stem)
    if pred.shape != gt.shape:
        raise ValueError(f"{job.record.gt}: ground truth {gt.shape} and prediction {pred.shape} differ in size")
    valid = gt != IGNORE
    label = job.record.label
    return {"stem": job.record.stem, "cm": confusion_matrix(pred, gt, job.num_classes),
            "jaccard": foreground_jaccard(pred == label, gt == label, valid)}


def run(ctx: StageContext, src: Path, dst: Path) -> dict:
    """Score `src`; write `dst/per_image.csv` and `dst/scores.json` and return the latter's content
    {images, scored, fg_jaccard, miou, pixel_acc, per_class_iou, seconds}. Results are folded as they arrive
    (one confusion matrix, one sum), so the driver holds nothing per image whatever the number of images."""
    start = time.time()
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    jobs = (ScoreJob(r, str(src), ctx.cfg.data, len(ctx.classes)) for r in ctx.records)
    cm = np.zeros((len(ctx.classes), len(ctx.classes)), np.int64)
    scored = 0
    with atomic_text_writer(dst / PER_IMAGE_FILE) as f:
        rows = csv.writer(f)
        rows.writerow(["stem", "fg_jaccard"])
        for result in stream_tasks(score_one, jobs, len(ctx.records), ctx.cfg.ray, desc=f"score {src.name}",
                                   memory_mb=200):
            if result is None:  # no ground truth for this image
                continue
            cm += result["cm"]
            scored += 1
            rows.writerow([result["stem"], repr(result["jaccard"])])  # full precision: the mean is taken from here
    scores = {
        "images": len(ctx.records),
        "scored": scored,
        # an exact sum of the file's column: the same whatever order the tasks finished in
        "fg_jaccard": math.fsum(j for _, j in iter_per_image(dst)) / scored if scored else None,
        **(scores_from_confusion(cm, ctx.classes) if scored else {"miou": None, "pixel_acc": None,
                                                                  "per_class_iou": {}}),
        "seconds": round(time.time() - start, 2),
    }
    write_json(dst / "scores.json", scores)
    return scores
