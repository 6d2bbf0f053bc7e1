"""Supervised training on ground-truth masks: the one path of `coarse2fine full` (stages/full.py, a standard data
set) and of the weak run's full reference (stages/reference.py, the weak run's own photos).

    weights = train_supervised(cfg, 11, lambda mean, std: pairs.with_transform(augmentation(cfg.train, mean, std)),
                               out_dir, device="cpu")
    model, evaluated = trained_model(cfg, 11, out_dir)          # best.pt when validation kept one, else model.pt
    scores = evaluate(model, pairs.eval_pairs(), 11, names)     # pipeline.learn.inference (test-time options there)
    scores = score_on_ground_truth(model, records, cfg, classes)  # a weak run's photos, in its network's classes

The network is `cfg.model` with `num_outputs` classes, its head initialised from `torch.manual_seed(cfg.run.seed)`;
it trains with `cfg.train` and seed `cfg.run.seed` in pipeline.learn.engine.train_model (resumable: a rerun
continues from out_dir/last.pt), in this process, or with Ray Train workers (pipeline.learn.distributed) on the
caller's Ray cluster when `workers > 1` or `use_gpu`.
"""
from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from pipeline.config import Config, TrainConfig
from pipeline.data.transforms import TrainTransform
from pipeline.data.weak import network_truth
from pipeline.io import read_image
from pipeline.learn.engine import train_model
from pipeline.learn.inference import evaluate
from pipeline.models import build_model
from pipeline.models.backbones import normalisation
from pipeline.stage import Record, network_classes

MakeTrainSet = Callable[[tuple, tuple], Any]  # (mean, std) -> the augmented training set (engine protocol)
MakeValFn = Callable[[str], Callable[[nn.Module], dict]]  # device -> the validation function of pipeline.learn.engine


def seeded_model(cfg: Config, num_outputs: int) -> nn.Module:
    """`cfg.model` for `num_outputs` classes; the same seed gives the same initial head weights."""
    torch.manual_seed(cfg.run.seed)
    return build_model(cfg.model, num_outputs)


def augmentation(train: TrainConfig, mean: tuple, std: tuple) -> TrainTransform:
    """The training augmentation of `train` (crop, scale_range, jitter; always random flips), normalised with mean /
    std."""
    return TrainTransform(train.crop, train.scale_range, True, train.jitter, mean, std)


def train_supervised(cfg: Config, num_outputs: int, make_train_set: MakeTrainSet, out_dir: Path, *,
                     device: str, workers: int = 1, use_gpu: bool = False,
                     make_val_fn: MakeValFn | None = None) -> Path:
    """Train `seeded_model(cfg, num_outputs)` on `make_train_set(mean, std)`; returns out_dir/model.pt.

    In this process on `device`, or, with `workers > 1` or `use_gpu`, with Ray Train workers (both factories must
    then be picklable; rank 0 validates on the CPU). `make_val_fn(device)` gives the validation run at every
    checkpoint (best.pt keeps the best weights); None = no validation."""
    if workers > 1 or use_gpu:
        from pipeline.learn.distributed import train_distributed

        mean, std = normalisation(cfg.model.backbone)
        return train_distributed(partial(seeded_model, cfg, num_outputs), partial(make_train_set, mean, std),
                                 cfg.train, out_dir, seed=cfg.run.seed, num_workers=workers, use_gpu=use_gpu,
                                 make_val_fn=partial(make_val_fn, "cpu") if make_val_fn else None)
    model = seeded_model(cfg, num_outputs)
    return train_model(model, make_train_set(model.mean, model.std), cfg.train, out_dir, seed=cfg.run.seed,
                       device=device, val_fn=make_val_fn(device) if make_val_fn else None)


def trained_model(cfg: Config, num_outputs: int, out_dir: Path, device: str = "cpu") -> tuple[nn.Module, str]:
    """The trained network of out_dir in eval mode on `device`, and which file it came from: best.pt (the best
    validation score) when there is one, else model.pt."""
    model = build_model(dataclasses.replace(cfg.model, pretrained="none"), num_outputs)  # weights: the file's
    best = Path(out_dir) / "best.pt"
    if best.is_file():
        state, evaluated = torch.load(best, map_location=device, weights_only=True)["model"], "best.pt"
    else:
        state, evaluated = torch.load(Path(out_dir) / "model.pt", map_location=device, weights_only=True), "model.pt"
    model.load_state_dict(state)
    return model.to(device).eval(), evaluated



def score_on_ground_truth(model: nn.Module, records: Sequence[Record], cfg: Config, classes: tuple[str, ...],
                          device: str = "cpu") -> dict:
    """Scores of a rounds-shaped network on a weak run's photos `records` against their ground truth in the classes
    it predicts (`network_truth`; `classes` are the data set's): mIoU, per-class IoU, pixel accuracy, the mean
    per-image foreground Jaccard of each image's label (class 1 for a `rounds.foreground_network` network) and the
    number of images. Whole images, one scale, no flip: the full reference and the weak network are scored alike."""
    def pairs():
        for r in records:
            yield read_image(r.image, cfg.data.max_pixels), network_truth(r, cfg, len(classes))

    labels = [1 if cfg.rounds.foreground_network else r.label for r in records]
    scores = evaluate(model.to(device), pairs(), len(network_classes(cfg, classes)), network_classes(cfg, classes),
                      device=device, labels=labels)
    scores.pop("confusion")
    return scores
