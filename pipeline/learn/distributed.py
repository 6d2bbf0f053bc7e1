"""Data-parallel training on Ray Train: `TorchTrainer` + `ScalingConfig(num_workers, use_gpu)`, gloo on CPU.

    path = train_distributed(make_model, make_dataset, cfg.train, out_dir, seed=0, num_workers=2, use_gpu=False)

Every worker builds its own model and data set from the two (picklable) factories, so nothing large travels through
Ray. `pipeline.learn.engine.train_model` does the rest with rank/world_size: the global sample stream (see its docstring)
is split round-robin, worker r reading samples r, r + W, r + 2W, ..., so one step of W workers with batch B sees the
same images as one worker with batch W x B; gradients are averaged by DistributedDataParallel. Rank 0 writes
`out_dir` (last.pt, log.csv, model.pt); `out_dir` must be on storage all workers see (a local folder on one machine).

Assumptions: BatchNorm statistics are per worker (no SyncBatchNorm: it has no CPU/gloo path), so results match
one worker within a tolerance, not bit for bit; the Ray cluster is the caller's (`ray_session`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from torch import nn

from pipeline.config import TrainConfig


def _worker_loop(config: dict) -> None:
    import ray.train
    import torch

    from pipeline.learn.engine import train_model

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if not config["use_gpu"]:
        torch.set_num_threads(1)  # one CPU per worker (ScalingConfig below)
    device = "cpu"
    if config["use_gpu"]:
        device = f"cuda:{ctx.get_local_rank()}"
        torch.cuda.set_device(device)
    torch.manual_seed(config["seed"])  # identical initial weights on every worker (DDP also broadcasts rank 0's)
    model = config["make_model"]()
    dataset = config["make_dataset"]()
    val_fn = config["make_val_fn"]() if (config["make_val_fn"] is not None and rank == 0) else None
    train_model(model, dataset, config["cfg"], Path(config["out_dir"]), seed=config["seed"], resume=config["resume"],
                device=device, val_fn=val_fn, rank=rank, world_size=world)
    ray.train.report({"done": 1})


def train_distributed(make_model: Callable[[], nn.Module], make_dataset: Callable[[], Any], cfg: TrainConfig,
                      out_dir: Path, *, seed: int, num_workers: int, use_gpu: bool = False, resume: bool = True,
                      make_val_fn: Callable[[], Callable[[nn.Module], dict]] | None = None) -> Path:
    """Train with `num_workers` Ray Train workers; returns out_dir/model.pt (written by rank 0).

    Requires a running Ray cluster (pipeline.orchestration.parallel.ray_session or the test fixture). `cfg.batch_size` is per
    worker; each CPU worker runs torch with one thread.
    """
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    loop_config = dict(make_model=make_model, make_dataset=make_dataset, make_val_fn=make_val_fn, cfg=cfg,
                       out_dir=str(out_dir), seed=seed, resume=resume, use_gpu=use_gpu)
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": 1, **({"GPU": 1} if use_gpu else {})}),
        run_config=RunConfig(name=f"train-{out_dir.name}", storage_path=str(out_dir / "ray_train")),
    )
    trainer.fit()  # raises if a worker failed
    final = out_dir / "model.pt"
    if not final.exists():
        raise RuntimeError(f"{final}: Ray Train finished but rank 0 wrote no model")
    return final
