"""Stage `train`: train the SRM/CRM network (pipeline.models) on the current pseudo-labels, one round at a time.

    summary = run(ctx, src=run_dir / "crf", dst=run_dir / "round1" / "train")   # ctx.round == 1

Inputs: `src/<stem>.png` for every record (the previous stage's refined pseudo-labels; 255 = ignore, skipped by the
loss). Output: `dst/model.pt` (final weights, written last by pipeline.learn.engine.train_model), `dst/last.pt`
(resumable checkpoint every `train.checkpoint_every` iterations: a killed round continues where it stopped),
`dst/log.csv`.

The whole training run is one device task (`pipeline.orchestration.parallel.run_on_device`): a GPU when the Ray
cluster has one (bf16 autocast, channels_last per `train.amp` / `train.channels_last`), otherwise all the CPUs of
its largest node. A cluster with two or more GPUs trains data parallel with Ray Train instead, one worker per GPU
(`train_on_gpus`, decided by `training_workers`): `train.batch_size` is per worker, so a step sees workers x batch
images, and BatchNorm statistics are per worker (pipeline/learn/distributed.py). Only paths and configs travel to
the workers; they read images and masks from disk.

Round k > 1 starts from round k-1's `model.pt` (round 1 from the ImageNet backbone).
Round k trains at peak learning rate `train.lr x rounds.lr_decay^(k-1)`: as every later round starts from the
previous round's weights, a decay below 1 makes it fine-tune that network on its refined labels rather than restart
its schedule.
The seed of round k is `run.seed + k`, so rounds draw different crops but a rerun draws the same ones.
"""
from __future__ import annotations

import dataclasses
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from pipeline.config import Config, TrainConfig
from pipeline.orchestration.parallel import cluster_resources, run_on_device, training_workers
from pipeline.stage import Record, StageContext, network_outputs

if TYPE_CHECKING:
    from torch import nn


def round_model(cfg: Config, num_classes: int, warm_start: str | None) -> nn.Module:
    """The round's network: `num_classes` is the data set's (2 outputs with `rounds.foreground_network`); loaded from
    the previous round's weights when `warm_start` is given."""
    import torch

    from pipeline.models import build_model

    model = build_model(cfg.model, network_outputs(cfg, num_classes))
    if warm_start:
        model.load_state_dict(torch.load(warm_start, map_location="cpu", weights_only=True))
    return model


def round_dataset(cfg: Config, records: Sequence[Record], num_classes: int, src: str, mean: tuple, std: tuple):
    """The pseudo-labels `src/<stem>.png` of `records` with the training augmentation (every class >= 1 becomes
    foreground with `rounds.foreground_network`)."""
    from pipeline.data.transforms import TrainTransform
    from pipeline.data.weak import PseudoLabelDataset

    t = cfg.train
    transform = TrainTransform(t.crop, t.scale_range, True, t.jitter, mean, std)  # True: random flips
    return PseudoLabelDataset(records, Path(src), transform, cfg.data.max_pixels, num_classes=num_classes,
                              foreground_only=cfg.rounds.foreground_network)


def train_task(cfg: Config, records: Sequence[Record], num_classes: int, src: str, dst: str, round_: int,
               warm_start: str | None) -> dict:
    """Device task: build the network, optionally load warm-start weights, train, return a small summary."""
    import torch

    from pipeline.learn.engine import train_model

    torch.manual_seed(cfg.run.seed + round_)
    model = round_model(cfg, num_classes, warm_start)
    dataset = round_dataset(cfg, records, num_classes, src, model.mean, model.std)
    start = time.time()
    train_cfg = round_train_config(cfg, round_)
    path = train_model(model, dataset, train_cfg, Path(dst), seed=cfg.run.seed + round_, resume=True)
    return {"model": str(path), "iterations": train_cfg.iterations, "lr": train_cfg.lr,
            "seconds": round(time.time() - start, 2), "device": "cuda" if torch.cuda.is_available() else "cpu"}


def train_on_gpus(cfg: Config, records: Sequence[Record], num_classes: int, src: str, dst: str, round_: int,
                  warm_start: str | None, workers: int) -> dict:
    """Ray Train data parallel over `workers` GPUs (`pipeline.learn.distributed`): every worker builds the network
    and data set itself, `train.batch_size` images per worker and step; rank 0 writes `dst` (resumable, as above)."""
    from pipeline.learn.distributed import train_distributed
    from pipeline.models.backbones import normalisation

    mean, std = normalisation(cfg.model.backbone)  # what the data set needs, without building a network here
    start = time.time()
    train_cfg = round_train_config(cfg, round_)
    path = train_distributed(partial(round_model, cfg, num_classes, warm_start),
                             partial(round_dataset, cfg, records, num_classes, src, mean, std),
                             train_cfg, Path(dst), seed=cfg.run.seed + round_, num_workers=workers, use_gpu=True)
    return {"model": str(path), "iterations": train_cfg.iterations, "lr": train_cfg.lr,
            "seconds": round(time.time() - start, 2), "device": f"cuda x {workers} (Ray Train)"}


def round_train_config(cfg: Config, round_: int) -> TrainConfig:
    """`cfg.train` with round `round_`'s peak learning rate, train.lr x rounds.lr_decay^(round_ - 1)."""
    return dataclasses.replace(cfg.train, lr=cfg.train.lr * cfg.rounds.lr_decay ** (round_ - 1))


def run(ctx: StageContext, src: Path, dst: Path) -> dict:
    """Train round `ctx.round` on `src/<stem>.png` into `dst/model.pt`; returns iterations, seconds, device."""
    src, dst = Path(src), Path(dst)
    missing = [r.stem for r in ctx.records if not (src / f"{r.stem}.png").is_file()]
    if missing:
        raise FileNotFoundError(f"{src}: {len(missing)} pseudo-labels missing for training (e.g. {missing[0]}.png)")
    dst.mkdir(parents=True, exist_ok=True)
    warm = None
    if ctx.round > 1:
        previous = ctx.run_dir / f"round{ctx.round - 1}" / "train" / "model.pt"
        if not previous.is_file():
            raise FileNotFoundError(f"{previous}: round {ctx.round} starts from the previous round's weights")
        warm = str(previous)
    workers, _ = training_workers(cluster_resources(ctx.cfg.ray))
    if workers > 1:
        return train_on_gpus(ctx.cfg, ctx.records, len(ctx.classes), str(src), str(dst), ctx.round, warm,
                             workers)
    return run_on_device(train_task, ctx.cfg, ctx.records, len(ctx.classes), str(src), str(dst), ctx.round,
                         warm, cfg=ctx.cfg.ray,
                         progress=lambda elapsed: training_progress(dst, ctx.cfg.train.iterations,
                                                                    ctx.cfg.train.batch_size, elapsed))


def training_progress(dst: Path, iterations: int, batch_size: int, elapsed: float) -> str:
    """"train: iteration 40/120, loss 0.3120, 25s, ETA 50s" from the last row of `dst/log.csv` (the engine's log).

    The ETA is the remaining iterations at the logged images/s, from the time that row was written."""
    try:
        log = dst / "log.csv"
        row = log.read_text().strip().splitlines()[-1].split(",")
        done, loss, images_per_s = int(row[0]), float(row[1]), float(row[3])
        since = max(time.time() - log.stat().st_mtime, 0.0)
    except (OSError, IndexError, ValueError):
        return f"train: starting, {iterations} iterations, {elapsed:.0f}s"
    left = (iterations - done) * batch_size / images_per_s - since if images_per_s > 0 else None
    return (f"train: iteration {done}/{iterations}, loss {loss:.4f}, {elapsed:.0f}s, "
            f"ETA {'?' if left is None else f'{max(left, 0):.0f}s'}")
