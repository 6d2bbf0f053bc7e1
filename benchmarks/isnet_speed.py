"""ISNet's cost per image at 1024 x 1024 for several batch sizes, on this machine's device.

    .venv/bin/python benchmarks/isnet_speed.py                       # CPU float32, batches 1 2 4, all cores
    .venv/bin/python benchmarks/isnet_speed.py --batches 1 4 16      # on CUDA: bf16 autocast + channels_last

The network as the coarse stage runs it (pipeline/coarse/salient.py: float32 on CPU; bf16 autocast and channels_last
on CUDA), on random input (the weights and input do not change the cost), after `--warmup` untimed forwards per
batch size. Prints, per batch size, the median seconds per forward, seconds per image and images/s, and the ratio of
each batch's per-image cost to batch 1's: the gain a batched ISNet pass would bring over the stage's one image
(two with `coarse.isnet_flip`) per forward. Needs the weights of `coarse2fine weights isnet`.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.coarse.features import pick_device  # noqa: E402
from pipeline.models.isnet import ISNET_SIZE, load_isnet_onnx  # noqa: E402
from pipeline.models.weights import isnet_path  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4], help="batch sizes to time")
    parser.add_argument("--iters", type=int, default=3, help="timed forwards per batch size")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards per batch size")
    parser.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0 = all cores)")
    parser.add_argument("--weights", default="", help="ISNet ONNX file (default: the weights cache)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device()
    on_cuda = device.type == "cuda"
    model = load_isnet_onnx(isnet_path(args.weights)).to(device).eval()
    if on_cuda:
        model = model.to(memory_format=torch.channels_last)
    print(f"device {torch.cuda.get_device_name() if on_cuda else f'cpu, {torch.get_num_threads()} threads'}, "
          f"{'bf16 autocast + channels_last' if on_cuda else 'float32'}, input {ISNET_SIZE} x {ISNET_SIZE}")
    print(f"{'batch':>5} {'s/forward':>10} {'s/image':>9} {'images/s':>9} {'vs batch 1':>11}")
    first = None
    for batch in args.batches:
        x = torch.randn(batch, 3, ISNET_SIZE, ISNET_SIZE, device=device)
        times = []
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_cuda):
            for step in range(args.warmup + args.iters):
                start = time.perf_counter()
                model(x)
                if on_cuda:
                    torch.cuda.synchronize()
                if step >= args.warmup:
                    times.append(time.perf_counter() - start)
        per_forward = statistics.median(times)
        per_image = per_forward / batch
        first = first or per_image
        print(f"{batch:>5} {per_forward:>10.3f} {per_image:>9.3f} {1 / per_image:>9.2f} {per_image / first:>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
