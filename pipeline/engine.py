"""The training engine: one readable loop for every segmentation training run (weak rounds and full supervision).

    path = train_model(model, dataset, cfg.train, out_dir, seed=0, val_fn=lambda m: evaluate(m, val_set, 11))

Data set protocol: `len(dataset)` and either `dataset.get(index, rng) -> (float32 [3,h,w], int64 [h,w])` (random
augmentation draws only from `rng`) or plain `dataset[index]` (deterministic data sets).

Seeding (deterministic given `seed`, also across `--resume`): the k-th sample the run consumes (k = 0, 1, 2, ...)
is `perm_e[k % n]` with `perm_e = default_rng([seed, e]).permutation(n)`, e = k // n (a fresh shuffle per epoch),
and is augmented with `default_rng([seed, 1, k])`. Iteration t consumes samples k in
[t * B * A, (t + 1) * B * A) (B = batch_size, A = grad_accum). The torch RNG (dropout, ...) is seeded with `seed`
and saved in every checkpoint, so a run resumed from `last.pt` gives the same weights as an uninterrupted one (CPU).

Outputs in `out_dir`: `last.pt` every `checkpoint_every` iterations (model, optimiser, scheduler, scaler, torch RNG,
iteration, best score; loadable with `torch.load(weights_only=True)`), `best.pt` (weights with the best validation
mIoU when `val_fn` is given), `model.pt` (final weights, or their EMA, written last), `log.csv`, TensorBoard
events if available.

Loss: pipeline.models.SegLoss (cross-entropy or OHEM, ignore 255, + aux_weight x auxiliary head).
Mixed precision: bf16 autocast with `train.amp` on CUDA, with `train.amp_cpu` on CPU (worth it only where the CPU
has AVX512-BF16 or AMX: CamVid lite network 1.08 -> 0.91 s per step of 8 crops on the 2-core AMD EPYC here).
Memory format: channels_last with `train.channels_last` on CUDA, with `train.channels_last_cpu` on CPU (oneDNN's
NHWC convolutions; same numbers up to float rounding, see tests/test_engine.py, except that dropout draws its
mask in memory order, so a given seed drops other activations).
Weight averaging: with `train.ema_decay` = d > 0 an exponential moving average of the weights and buffers
(torch.optim.swa_utils.AveragedModel, as timm's ModelEma and mmengine's EMAHook) follows every optimiser step;
it is what validation scores and what best.pt and model.pt hold, and it is saved in last.pt for `--resume`.
Update n (n = 1, 2, ...; the first copies the weights) uses d_n = min(d, (1 + n) / (10 + n)) (TensorFlow's
ExponentialMovingAverage warm-up), so the average does not keep the random head of the first steps. Measured on
CamVid at 1620 steps (docs/results_full.md): no gain there (69.14 vs 69.12), and 3.4 ms per update.
Assumptions: bf16 autocast needs no loss scaling, so the GradScaler is disabled and only kept in the checkpoint for
format stability; weight decay is not applied to 1-D parameters (norm weights, biases), as in timm / torchvision refs.
"""
from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from .config import TrainConfig
from .io import atomic_write_bytes
from .models.losses import SegLoss

LOG_FIELDS = ["iteration", "loss", "lr", "images_per_s", "val_miou", "val_pixel_acc"]


# ---------------------------------------------------------------------------------------------------------------
# Data order

class SeededSamples(torch.utils.data.Dataset):
    """Map-style view whose item k is the k-th training sample of the run (see the module docstring)."""

    def __init__(self, dataset: Any, seed: int):
        if len(dataset) == 0:
            raise ValueError("training data set is empty")
        self.dataset, self.seed, self.n = dataset, seed, len(dataset)
        self._perm_epoch, self._perm = -1, np.arange(0)

    def index_of(self, k: int) -> int:
        epoch = k // self.n
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return int(self._perm[k % self.n])

    def __len__(self) -> int:
        return 2**62  # conceptually infinite; the sampler decides which k are read

    def __getitem__(self, k: int):
        index = self.index_of(k)
        if hasattr(self.dataset, "get"):
            return self.dataset.get(index, np.random.default_rng([self.seed, 1, k]))
        return self.dataset[index]


# ---------------------------------------------------------------------------------------------------------------
# Optimiser, schedule

def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Backbone at lr x backbone_lr_mult, the rest at lr; no weight decay on 1-D params (norms, biases)."""
    backbone = getattr(model, "backbone", None)
    backbone_ids = {id(p) for p in backbone.parameters()} if backbone is not None else set()
    groups: dict[tuple[bool, bool], list] = {(b, d): [] for b in (True, False) for d in (True, False)}
    for p in model.parameters():
        if p.requires_grad:
            groups[(id(p) in backbone_ids, p.ndim > 1)].append(p)
    param_groups = [
        {"params": ps, "lr": cfg.lr * (cfg.backbone_lr_mult if is_bb else 1.0),
         "weight_decay": cfg.weight_decay if decay else 0.0}
        for (is_bb, decay), ps in groups.items() if ps
    ]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=False)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg.lr)
    raise ValueError(f"config key 'train.optimizer': unknown optimiser {cfg.optimizer!r}")


def ema_of(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """The exponential moving average of `model`'s weights and buffers (see the module docstring for the warm-up)."""

    def update(averages: list[torch.Tensor], currents: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        d = min(decay, (1.0 + float(n_averaged)) / (10.0 + float(n_averaged)))
        for average, current in zip(averages, currents):
            if average.is_floating_point():
                average.lerp_(current, 1.0 - d)
            else:  # integer buffers (BatchNorm's num_batches_tracked) are counters: follow the model
                average.copy_(current)

    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=update, use_buffers=True)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up from ~0 to 1 over warmup_iters, then poly decay (1 - t/T)^power to 0 at T = iterations."""
    if step < cfg.warmup_iters:
        return (step + 1) / cfg.warmup_iters
    return max(0.0, 1.0 - step / cfg.iterations) ** cfg.poly_power


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints and logs

def _save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _log_row(path: Path, row: dict, start_iteration: int | None = None) -> None:
    """Append a row; on a fresh start or resume first drop rows past `start_iteration` (they will be redone)."""
    if start_iteration is not None:
        rows = []
        if path.exists() and start_iteration > 0:
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= start_iteration]
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        return
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=LOG_FIELDS).writerow({k: row.get(k, "") for k in LOG_FIELDS})


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(out_dir / "tb"))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ---------------------------------------------------------------------------------------------------------------
# The loop

def train_model(model: nn.Module, dataset: Any, cfg: TrainConfig, out_dir: Path, *, seed: int, resume: bool = True,
                device: str = "auto", val_fn: Callable[[nn.Module], dict] | None = None, best_metric: str = "miou",
                rank: int = 0, world_size: int = 1) -> Path:
    """Train `model` for cfg.iterations steps on `dataset`; returns out_dir/model.pt (final state_dict).

    With world_size > 1 (torch.distributed already initialised, see pipeline.distributed) the model is wrapped in
    DistributedDataParallel, worker `rank` reads every world_size-th sample of the global stream, and only rank 0
    validates and writes files (out_dir must be on storage every worker can read for `--resume`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    dev = resolve_device(device)
    on_cuda = dev.type == "cuda"
    torch.manual_seed(seed)
    model.to(dev)
    channels_last = cfg.channels_last if on_cuda else cfg.channels_last_cpu
    if channels_last:
        model.to(memory_format=torch.channels_last)
    net = model  # what runs forward/backward; the optimiser and checkpoints use the plain `model`
    if world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if on_cuda else None)
    writes = rank == 0
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
    loss_fn = SegLoss.from_config(cfg)
    scaler = torch.amp.GradScaler(dev.type, enabled=False)  # bf16 needs no loss scaling (see docstring)
    ema = ema_of(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    scored = ema.module if ema is not None else model  # what validation, best.pt and model.pt see

    start, best = 0, -math.inf
    last_path = out_dir / "last.pt"
    if resume and last_path.exists():
        ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        torch.set_rng_state(ckpt["torch_rng"])
        if ema is not None:
            if "ema" not in ckpt:
                raise ValueError(f"{last_path}: written without train.ema_decay; resume it without EMA or start afresh")
            ema.load_state_dict(ckpt["ema"])
        if on_cuda and "cuda_rng" in ckpt:
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        start, best = int(ckpt["iteration"]), float(ckpt["best"])
        print(f"resuming {out_dir} from iteration {start}", file=sys.stderr)
    log_path = out_dir / "log.csv"
    if writes:
        _log_row(log_path, {}, start_iteration=start)
    writer = _tensorboard(out_dir) if writes else None

    per_step = cfg.batch_size * cfg.grad_accum * world_size  # samples of the global stream per iteration
    samples = SeededSamples(dataset, seed)
    my_samples = range(start * per_step + rank, cfg.iterations * per_step, world_size)  # this worker's shard
    loader = torch.utils.data.DataLoader(
        samples, batch_size=cfg.batch_size, sampler=my_samples,
        num_workers=cfg.num_workers, pin_memory=on_cuda, drop_last=False,
        generator=torch.Generator().manual_seed(seed))  # own generator: the global torch RNG stays untouched
    batches = iter(loader)
    model.train()
    tick, seen, loss_sum, steps = time.time(), 0, 0.0, 0
    for it in range(start, cfg.iterations):
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(cfg.grad_accum):
            x, y = next(batches)
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cfg.amp if on_cuda else cfg.amp_cpu):
                outputs = net(x)
            loss = loss_fn({k: v.float() for k, v in outputs.items()}, y) / cfg.grad_accum
            scaler.scale(loss).backward()
            step_loss += float(loss.detach())
            seen += x.shape[0]
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        loss_sum += step_loss
        steps += 1
        done = it + 1

        row: dict[str, Any] = {}
        if writes and (done % cfg.log_every == 0 or done == cfg.iterations):
            rate = seen / max(time.time() - tick, 1e-9)
            row = {"iteration": done, "loss": f"{loss_sum / max(steps, 1):.5f}",
                   "lr": f"{optimizer.param_groups[-1]['lr']:.3e}", "images_per_s": f"{rate:.2f}"}
            print(f"  iter {done}/{cfg.iterations} loss {row['loss']} lr {row['lr']} {rate:.1f} img/s",
                  file=sys.stderr, flush=True)
            tick, seen, loss_sum, steps = time.time(), 0, 0.0, 0
        if writes and (done % cfg.checkpoint_every == 0 or done == cfg.iterations):
            if val_fn is not None:
                scored.eval()
                with torch.no_grad():
                    scores = val_fn(scored)
                model.train()
                row.update(iteration=done, val_miou=f"{scores['miou']:.5f}",
                           val_pixel_acc=f"{scores.get('pixel_acc', float('nan')):.5f}")
                print(f"  iter {done} val mIoU {scores['miou']:.4f}", file=sys.stderr, flush=True)
                if writer is not None:
                    writer.add_scalar("val/miou", scores["miou"], done)
                if scores[best_metric] > best:
                    best = float(scores[best_metric])
                    _save({"model": scored.state_dict(), "iteration": done, best_metric: best}, out_dir / "best.pt")
            ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "torch_rng": torch.get_rng_state(), "iteration": done, "best": best, "seed": seed}
            if on_cuda:
                ckpt["cuda_rng"] = torch.cuda.get_rng_state_all()
            if ema is not None:
                ckpt["ema"] = ema.state_dict()
            _save(ckpt, last_path)
        if row:
            _log_row(log_path, row)
            if writer is not None and "loss" in row:
                writer.add_scalar("train/loss", float(row["loss"]), done)
                writer.add_scalar("train/lr", float(row["lr"]), done)
    if writer is not None:
        writer.close()
    model.eval()
    if ema is not None:  # the caller's model leaves with the weights that were saved
        model.load_state_dict(ema.module.state_dict())
    final = out_dir / "model.pt"
    if writes:
        _save({k: v.detach().cpu() for k, v in model.state_dict().items()}, final)
    return final
