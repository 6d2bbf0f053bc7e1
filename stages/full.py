"""Fully supervised training + evaluation on a standard data set (Cityscapes, BDD100K, ADE20K, CamVid, VOC, folder).

    summary = run(load_config("configs/full_camvid.yaml", overrides=["train.iterations=200"]))
    # CLI: coarse2fine full --config configs/full_camvid.yaml [--set key=value ...]

Writes to <run.root>/<run.name>/full/: last.pt (resumable: rerunning continues), best.pt (best val mIoU
during training, on the first `full.val_max_images` val images), model.pt, log.csv, and metrics.json: the final
evaluation of best.pt (or model.pt when no validation ran) on the whole val split with the test-time options
(`test_time.scales`, `test_time.flip`, `full.eval_window`), scored at the original mask resolution.

Images are resized by `full.input_scale` before cropping (training) and before inference (evaluation); predictions
are upsampled back, so the score is always at full resolution. `full.train_workers > 1` or `full.use_gpu` trains with
Ray Train (pipeline.learn.distributed) on the Ray cluster of `ray_session(cfg.ray)`. The training and the loading of
the evaluated weights are pipeline.learn.supervised's, which the weak run's full reference (stages/reference.py)
trains with too.
"""
from __future__ import annotations

import contextlib
import time
from functools import partial
from pathlib import Path

from torch import nn

from pipeline.config import Config
from pipeline.data.datasets import SegPairs, open_dataset
from pipeline.learn.engine import resolve_device
from pipeline.learn.inference import evaluate
from pipeline.learn.supervised import augmentation, seeded_model, train_supervised, trained_model
from pipeline.io import write_json
from pipeline.orchestration.parallel import ray_session


def make_model(cfg: Config, num_classes: int) -> nn.Module:
    return seeded_model(cfg, num_classes)  # same initial head weights for the same seed


def make_train_set(cfg: Config, mean: tuple, std: tuple) -> SegPairs:
    return open_dataset(cfg.full, cfg.full.train_split).with_transform(augmentation(cfg.train, mean, std))


def score(model: nn.Module, pairs: SegPairs, cfg: Config, device: str, test_time: bool) -> dict:
    """Evaluate at full resolution; `test_time` adds the configured scales/flip/sliding window."""
    f = cfg.full
    options = dict(scales=cfg.test_time.scales, flip=cfg.test_time.flip, window=f.eval_window) if test_time else {}
    return evaluate(model, pairs.eval_pairs(), pairs.num_classes, pairs.class_names, device=device,
                    input_scale=f.input_scale, **options)


def make_val_fn(cfg: Config, device: str):
    val = open_dataset(cfg.full, cfg.full.val_split).subset(cfg.full.val_max_images)
    return partial(score, pairs=val, cfg=cfg, device=device, test_time=False)


def run(cfg: Config, validate: bool = True) -> dict:
    """Train cfg.model on cfg.full's data set with cfg.train, evaluate on its val split; returns the summary.

    `validate=False` skips validation during training (no time spent on it, no best.pt): the last weights are
    evaluated, as a fixed training budget (benchmarks/camvid_budget.py) needs."""
    out_dir = Path(cfg.run.root) / cfg.run.name / "full"
    train_set = open_dataset(cfg.full, cfg.full.train_split)  # fail early on a wrong layout
    val_set = open_dataset(cfg.full, cfg.full.val_split)
    num_classes = train_set.num_classes
    device = str(resolve_device("cuda" if cfg.full.use_gpu else "auto"))
    distributed = cfg.full.train_workers > 1 or cfg.full.use_gpu
    start = time.time()
    with ray_session(cfg.ray) if distributed else contextlib.nullcontext():  # Ray Train needs a cluster
        train_supervised(cfg, num_classes, partial(make_train_set, cfg), out_dir, device=device,
                         workers=cfg.full.train_workers, use_gpu=cfg.full.use_gpu,
                         make_val_fn=partial(make_val_fn, cfg) if validate else None)
    train_s = time.time() - start

    model, evaluated = trained_model(cfg, num_classes, out_dir, device)
    scores = score(model, val_set, cfg, device, test_time=True)
    scores.pop("confusion")
    summary = {"dataset": cfg.full.dataset, "val_images": len(val_set), "train_images": len(train_set),
               "weights": evaluated, "train_seconds": round(train_s, 1), "iterations": cfg.train.iterations,
               "miou": scores["miou"], "pixel_acc": scores["pixel_acc"], "per_class_iou": scores["per_class_iou"],
               "model": {"backbone": cfg.model.backbone, "srm": cfg.model.srm, "crm": cfg.model.crm}}
    write_json(out_dir / "metrics.json", summary)
    print(f"{cfg.full.dataset} val mIoU {100 * summary['miou']:.1f}  pixel acc {100 * summary['pixel_acc']:.1f} "
          f"({evaluated}, {len(val_set)} images)")
    return summary
