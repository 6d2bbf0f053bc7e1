"""Forward+backward time per image of the plain head, +SRM, +CRM and +both, printed as ratios to the plain head.

    .venv/bin/python benchmarks/model_speed.py                               # CPU, lite, 512x1024, 2 threads
    .venv/bin/python benchmarks/model_speed.py --size 256 512 --iters 3      # quicker on a busy machine
    .venv/bin/python benchmarks/model_speed.py --device cuda --batch 8       # GPU: bf16 autocast, channels_last
    .venv/bin/python benchmarks/model_speed.py --frozen-stages 1            # + "+both" with the stem + stage 1 frozen

Each setting runs `--warmup` untimed steps, then `--iters` timed steps (forward, SegLoss with the aux head,
backward, on random data), the four settings taking turns step by step; the reported time is the median step
divided by the batch size, and the minimum is printed too. On CPU the median process CPU time per image is printed
as well: on a shared machine wall time mostly measures the other processes, CPU time (best with --threads 1)
measures the network. On CUDA the timing is synchronised and images/s is printed. The networks use
pretrained="none" (weights do not change the speed).
"""
from __future__ import annotations

import argparse
import statistics
from dataclasses import replace

import torch

from common import arguments, interleaved_times
from pipeline.config import ModelConfig
from pipeline.learn.losses import AUX_WEIGHT, OHEM_THRESH, SegLoss
from pipeline.models import build_model

SETTINGS = (("plain", False, False, 0), ("+SRM", True, False, 0), ("+CRM", False, True, 0), ("+both", True, True, 0))
VARIANTS = {"lite": ModelConfig(backbone="lite0", width=96), "r50": ModelConfig(backbone="resnet50", width=256),
            "r101": ModelConfig(backbone="resnet101", width=256)}


class Setting:
    """One network on random data; `step()` runs one forward+backward."""

    def __init__(self, cfg: ModelConfig, args: argparse.Namespace, device: torch.device) -> None:
        torch.manual_seed(0)
        self.device = device
        self.model = build_model(cfg, num_classes=19).to(device).train()
        self.x = torch.randn(args.batch, 3, *args.size, device=device)
        self.y = torch.randint(0, 19, (args.batch, *args.size), device=device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.loss_fn = SegLoss(aux_weight=AUX_WEIGHT, ohem=False, ohem_thresh=OHEM_THRESH, ohem_min_kept=10_000)

    def step(self) -> None:
        self.model.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss = self.loss_fn(self.model(self.x), self.y)
        loss.backward()


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--size", nargs=2, type=int, default=(512, 1024), metavar=("H", "W"),
                        help="image size (Cityscapes' training crop)")
    parser.add_argument("--variant", default="lite", choices=list(VARIANTS), help="network variant")
    parser.add_argument("--batch", type=int, default=1, help="images per step")
    parser.add_argument("--iters", type=int, default=5, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per setting")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (2: the shared machine's cores)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--frozen-stages", type=int, default=0, help="also time +both with model.frozen_stages=N "
                        "(0 = not timed)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"{args.variant} forward+backward, {args.size[0]}x{args.size[1]}, batch {args.batch}, {where}"
          + (", bf16 autocast, channels_last" if device.type == "cuda" else ""))
    extra = ((f"+both f{args.frozen_stages}", True, True, args.frozen_stages),) if args.frozen_stages else ()
    settings = {name: Setting(replace(VARIANTS[args.variant], pretrained="none", srm=srm, srm_mask=srm, crm=crm,
                                      frozen_stages=frozen), args, device)
                for name, srm, crm, frozen in SETTINGS + extra}
    times = interleaved_times({name: setting.step for name, setting in settings.items()}, args.iters, args.warmup,
                              sync=torch.cuda.synchronize if device.type == "cuda" else None)
    results = {name: [wall / args.batch for wall, _ in runs] for name, runs in times.items()}  # seconds per image
    cpu_results = {name: [cpu / args.batch for _, cpu in runs] for name, runs in times.items()}
    base_median = statistics.median(results["plain"])
    base_min = min(results["plain"])
    base_cpu = statistics.median(cpu_results["plain"])
    print(f"{'setting':9s} {'median s/img':>13s} {'min s/img':>10s} {'ratio(median)':>14s} {'ratio(min)':>11s}"
          + (f" {'images/s':>9s}" if device.type == "cuda" else f" {'CPU s/img':>10s} {'ratio(CPU)':>11s}"))
    for name, per_image in results.items():
        med, low = statistics.median(per_image), min(per_image)
        line = f"{name:9s} {med:13.4f} {low:10.4f} {med / base_median:14.3f} {low / base_min:11.3f}"
        if device.type == "cuda":
            line += f" {1.0 / med:9.1f}"
        else:
            cpu = statistics.median(cpu_results[name])
            line += f" {cpu:10.4f} {cpu / base_cpu:11.3f}"
        print(line)


if __name__ == "__main__":
    main()
