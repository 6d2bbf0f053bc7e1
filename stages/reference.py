"""Stage `full_reference`: the fully supervised reference of a weak run, what `coarse2fine compare` measures the
weak network against.

    summary = run(ctx, None, run_dir / "full_reference")   # run by pipeline.orchestration.reference_run.run_reference

Trains the rounds' network (the same `model:` and `train:` sections, seed `run.seed`) on the weak run's photos that
have a ground-truth mask, learning the masks in the classes the rounds' network predicts
(pipeline.data.weak.network_truth: the data set's classes, or foreground = the image's label with
`rounds.foreground_network`). The training is pipeline.learn.supervised's, the path `coarse2fine full` trains with:
a killed training resumes from dst/last.pt. Then scores the network on the same photos
(pipeline.learn.supervised.score_on_ground_truth: whole image, one scale, no flip): mIoU, per-class IoU, pixel
accuracy and the mean per-image foreground Jaccard of each image's label.

Outputs: dst/model.pt, last.pt, log.csv, metrics.json (the runner adds manifest.json and DONE). The photos are its
training photos, so its score is the weak pipeline's upper bound on its own photos, not a held-out score.
Runs in this process (a GPU when there is one), without Ray.
"""
from __future__ import annotations

import time
from pathlib import Path

from pipeline.data.weak import DatasetError, GroundTruthDataset
from pipeline.io import write_json
from pipeline.learn.engine import resolve_device
from pipeline.learn.supervised import augmentation, score_on_ground_truth, train_supervised, trained_model
from pipeline.stage import StageContext, network_outputs


def run(ctx: StageContext, src: Path | None, dst: Path) -> dict:
    """Train the reference on the ground truth of ctx.records into dst, score it; returns iterations, seconds,
    images, mIoU, fg Jaccard, device."""
    cfg, dst = ctx.cfg, Path(dst)
    records = [r for r in ctx.records if r.gt is not None]
    if not records:
        raise DatasetError(f"{Path(cfg.data.root) / cfg.data.masks}: no ground-truth masks (data.masks="
                           f"{cfg.data.masks!r}): the full reference trains on them")
    num_classes, outputs = len(ctx.classes), network_outputs(cfg, len(ctx.classes))
    device = str(resolve_device("auto"))

    def make_train_set(mean: tuple, std: tuple) -> GroundTruthDataset:
        return GroundTruthDataset(records, cfg, num_classes, augmentation(cfg.train, mean, std))

    start = time.time()
    train_supervised(cfg, outputs, make_train_set, dst, device=device)
    seconds = round(time.time() - start, 2)
    model, evaluated = trained_model(cfg, outputs, dst, device)
    metrics = {**score_on_ground_truth(model, records, cfg, ctx.classes, device), "iterations": cfg.train.iterations,
               "weights": str(dst / evaluated)}
    write_json(dst / "metrics.json", metrics)
    return {"iterations": cfg.train.iterations, "seconds": seconds, "images": len(records), "miou": metrics["miou"],
            "fg_jaccard": metrics["fg_jaccard"], "device": device}
