"""The training engine: one readable loop for every segmentation training run (weak rounds and full supervision).

    path = train_model(model, dataset, cfg.train, out_dir, seed=0, val_fn=lambda m: evaluate(m, val_set, 11))

Data set protocol: `len(dataset)` and either `dataset.get(index, rng) -> (float32 [3,h,w], int64 [h,w])` (random
augmentation draws only from `rng`) or plain `dataset[index]` (deterministic data sets).

Seeding (deterministic given `seed`, also across `--resume`): the k-th sample the run consumes (k = 0, 1, 2, ...)
is `perm_e[k % n]` with `perm_e = default_rng([seed, e]).permutation(n)`, e = k // n (a fresh shuffle per epoch),
and is augmented with `default_rng([seed, 1, k])`. Iteration t consumes samples k in [t * B, (t + 1) * B)
(B = batch_size x workers). The torch RNG (dropout, ...) is seeded with `seed` and saved in every checkpoint, so a
run resumed from `last.pt` gives the same weights as an uninterrupted one (CPU).

Outputs in `out_dir`: `last.pt` every `checkpoint_every` iterations (model, optimiser, scheduler, torch RNG,
iteration, best score; loadable with `torch.load(weights_only=True)`), `best.pt` (weights with the best validation
mIoU when `val_fn` is given), `model.pt` (final weights, written last), `log.csv`, TensorBoard events if available.

Loss: pipeline.learn.losses.SegLoss (cross-entropy or OHEM, ignore 255, + AUX_WEIGHT x auxiliary head).
Mixed precision and memory format: bf16 autocast (`train.amp`) and channels_last (`train.channels_last`) on CUDA
only (`cuda`), on every device (`always`: pays on CPUs with AVX512-BF16 or AMX), or never (`off`). bf16 needs no
loss scaling. Weight decay is not applied to 1-D parameters (norm weights, biases), as in timm / torchvision refs.
Schedule: linear warm-up over `train.warmup_iters`, then poly decay with power 0.9 (DeepLab, mmsegmentation);
SGD uses momentum 0.9.
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

from pipeline.config import TrainConfig
from pipeline.io import atomic_write_bytes
from pipeline.learn.losses import SegLoss

LOG_FIELDS = ["iteration", "loss", "lr", "images_per_s", "val_miou", "val_pixel_acc"]
SGD_MOMENTUM = 0.9  # the segmentation references' value
POLY_POWER = 0.9  # lr = peak x (1 - t/T)^0.9 after warm-up (DeepLab, mmsegmentation)


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
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=SGD_MOMENTUM, nesterov=False)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg.lr)
    raise ValueError(f"config key 'train.optimizer': unknown optimiser {cfg.optimizer!r}")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up from ~0 to 1 over warmup_iters, then poly decay (1 - t/T)^power to 0 at T = iterations."""
    if step < cfg.warmup_iters:
        return (step + 1) / cfg.warmup_iters
    return max(0.0, 1.0 - step / cfg.iterations) ** POLY_POWER


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


def applies(setting: str, device: torch.device) -> bool:
    """Whether a `cuda` / `always` / `off` setting (train.amp, train.channels_last) is on for `device`."""
    return setting == "always" or (setting == "cuda" and device.type == "cuda")


# ---------------------------------------------------------------------------------------------------------------
# The loop

def train_model(model: nn.Module, dataset: Any, cfg: TrainConfig, out_dir: Path, *, seed: int, resume: bool = True,
                device: str = "auto", val_fn: Callable[[nn.Module], dict] | None = None, rank: int = 0, world_size: int = 1) -> Path:
    """Train `model` for cfg.iterations steps on `dataset`; returns out_dir/model.pt (final state_dict).

    With world_size > 1 (torch.distributed already initialised, see pipeline.learn.distributed) the model is wrapped in
    DistributedDataParallel, worker `rank` reads every world_size-th sample of the global stream, and only rank 0
    validates and writes files (out_dir must be on storage every worker can read for `--resume`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)
    on_cuda = dev.type == "cuda"
    torch.manual_seed(seed)
    model.to(dev)
    channels_last, amp = applies(cfg.channels_last, dev), applies(cfg.amp, dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    net = model  # what runs forward/backward; the optimiser and checkpoints use the plain `model`
    if world_size > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if on_cuda else None)
    writes = rank == 0
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
    loss_fn = SegLoss.from_config(cfg)

    start, best = 0, -math.inf
    last_path = out_dir / "last.pt"
    if resume and last_path.exists():
        ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["torch_rng"])
        if on_cuda and "cuda_rng" in ckpt:
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        start, best = int(ckpt["iteration"]), float(ckpt["best"])
        print(f"resuming {out_dir} from iteration {start}", file=sys.stderr)
    log_path = out_dir / "log.csv"
    if writes:
        _log_row(log_path, {}, start_iteration=start)
    writer = _tensorboard(out_dir) if writes else None

    per_step = cfg.batch_size * world_size  # samples of the global stream per iteration
    samples = SeededSamples(dataset, seed)
    my_samples = range(start * per_step + rank, cfg.iterations * per_step, world_size)  # this worker's shard
    loader = torch.utils.data.DataLoader(
        samples, batch_size=cfg.batch_size, sampler=my_samples,
        num_workers=cfg.loader_workers, pin_memory=on_cuda, drop_last=False,
        generator=torch.Generator().manual_seed(seed))  # own generator: the global torch RNG stays untouched
    batches = iter(loader)
    model.train()
    tick, seen, loss_sum, steps = time.time(), 0, 0.0, 0
    for it in range(start, cfg.iterations):
        optimizer.zero_grad(set_to_none=True)
        x, y = next(batches)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            outputs = net(x)
        loss = loss_fn({k: v.float() for k, v in outputs.items()}, y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        seen += x.shape[0]
        loss_sum += float(loss.detach())
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
                model.eval()
                with torch.no_grad():
                    scores = val_fn(model)
                model.train()
                row.update(iteration=done, val_miou=f"{scores['miou']:.5f}",
                           val_pixel_acc=f"{scores.get('pixel_acc', float('nan')):.5f}")
                print(f"  iter {done} val mIoU {scores['miou']:.4f}", file=sys.stderr, flush=True)
                if writer is not None:
                    writer.add_scalar("val/miou", scores["miou"], done)
                if scores["miou"] > best:
                    best = float(scores["miou"])
                    _save({"model": model.state_dict(), "iteration": done, "miou": best}, out_dir / "best.pt")
            ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(), "iteration": done, "best": best, "seed": seed}
            if on_cuda:
                ckpt["cuda_rng"] = torch.cuda.get_rng_state_all()
            _save(ckpt, last_path)
        if row:
            _log_row(log_path, row)
            if writer is not None and "loss" in row:
                writer.add_scalar("train/loss", float(row["loss"]), done)
                writer.add_scalar("train/lr", float(row["lr"]), done)
    if writer is not None:
        writer.close()
    model.eval()
    final = out_dir / "model.pt"
    if writes:
        _save({k: v.detach().cpu() for k, v in model.state_dict().items()}, final)
    return final
