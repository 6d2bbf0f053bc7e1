"""Training step time of the `lite` network eager vs `torch.compile`d, timed in turns in one process.

    .venv/bin/python benchmarks/compile_speed.py                                  # CPU: the CamVid budget setting
    .venv/bin/python benchmarks/compile_speed.py --device cuda --size 512 1024    # GPU

The network and step are those of `benchmarks/camvid_budget.py --variant on --amp-cpu --channels-last --ohem
--width 64 --no-aux`: SRM + CRM on, decoder width 64, no auxiliary head, bf16 autocast (on CPU too), channels_last,
OHEM cross-entropy (threshold 0.7, 50k pixels), AdamW; batch 8 of 240x320 random images and labels (the speed does
not depend on the values). The two copies start from the same weights. Each runs `--warmup` untimed steps (the
compiled copy's first one includes the compilation, printed), then they take turns for `--iters` timed steps, so
load from other processes hits both alike; the medians and their ratio (compiled / eager) are printed.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from pipeline.config import ModelConfig
from pipeline.learn.losses import SegLoss
from pipeline.models import build_model


class Trainer:
    """One copy of the network with its own AdamW; `step()` returns the seconds of one training step."""

    def __init__(self, model: torch.nn.Module, compiled: bool, device: torch.device) -> None:
        self.device = device
        self.forward = torch.compile(model) if compiled else model
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)  # camvid_budget's optimiser
        self.loss_fn = SegLoss(aux_weight=0.0, ohem=True, ohem_thresh=0.7, ohem_min_kept=50_000)  # its loss

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            out = self.forward(x)
        self.loss_fn({k: v.float() for k, v in out.items()}, y).backward()
        self.opt.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", nargs=2, type=int, default=(240, 320), metavar=("H", "W"), help="crop (240 320)")
    parser.add_argument("--batch", type=int, default=8, help="images per step (8)")
    parser.add_argument("--iters", type=int, default=10, help="timed steps per mode (10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per mode (>= 1), compilation included (2)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (2: the shared machine)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cpu)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="lite0", width=64, aux=False, srm=True, crm=True, pretrained="none")
    model = build_model(cfg, num_classes=11).to(device).train().to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, *args.size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 11, (args.batch, *args.size), device=device)
    trainers = {"eager": Trainer(model, False, device), "compiled": Trainer(copy.deepcopy(model), True, device)}
    for name, trainer in trainers.items():
        first = [trainer.step(x, y) for _ in range(max(1, args.warmup))][0]
        print(f"{name}: first step {first:.1f} s" + (" (compilation included)" if name == "compiled" else ""),
              flush=True)
    times = {name: [] for name in trainers}
    for _ in range(args.iters):
        for name, trainer in trainers.items():
            times[name].append(trainer.step(x, y))
    eager, compiled = statistics.median(times["eager"]), statistics.median(times["compiled"])
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"lite on, width 64, {args.size[0]}x{args.size[1]}, batch {args.batch}, {where}, bf16 autocast, "
          f"channels_last: eager {eager:.3f} s/step, compiled {compiled:.3f} s/step, "
          f"ratio compiled/eager {compiled / eager:.3f}")


if __name__ == "__main__":
    main()
