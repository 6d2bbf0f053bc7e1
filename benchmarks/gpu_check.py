"""Images/s on one CUDA GPU of the demo run, training, prediction and the coarse methods: prints one table.

    bash benchmarks/gpu_check.sh [ISNET_ONNX]                                   # finds the Python, checks CUDA first
    python benchmarks/gpu_check.py --root /tmp/c2f-gpu-check [--isnet FILE]      # on a CUDA machine
    python benchmarks/gpu_check.py --allow-cpu --tiny --skip-demo                # smoke test of this script on a CPU

One table goes to stdout at the end (progress goes to stderr); each measurement gives rows:
- demo: a fresh `coarse2fine run --config configs/demo.yaml` subprocess (run root, data, Ray files under --root,
  output in <root>/demo.log, Ray on all cores): total and per-stage seconds, and round1/train's rate from log.csv;
- train: pipeline.learn.engine.train_model on synthetic in-memory batches with the CUDA defaults `train.amp=cuda`,
  `train.channels_last=cuda` (bf16 autocast + NHWC), then with both `off` (fp32, NCHW) for comparison;
- predict: the network on a batch under no_grad (bf16 + channels_last, then fp32), and the predict stage's own
  one-image path (pipeline.learn.inference.predict_probs with flip);
- coarse: stages.coarse.run per `coarse.method` (saliency, ddt, isnet) on the demo images repeated --coarse-repeat
  times, on a local Ray cluster (the device methods run as one GPU task, as in a run). ISNet needs its ONNX file
  (--isnet, else the cache of `coarse2fine weights isnet`); without one its row says skipped.
A failed measurement's row says `failed: <error>` and the exit status becomes 1; measurements that would start after
--budget seconds are skipped, so the check ends inside the caller's time limit.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from common import REPO, arguments, fail, median_seconds

NUM_CLASSES = 21  # VOC-sized head; the class count barely changes the network's cost


@dataclasses.dataclass
class Row:  # one line of the table
    what: str
    rate: str = "-"  # images/s
    seconds: str = "-"
    notes: str = ""
    failed: bool = False


def failed(what: str, err: BaseException) -> Row:
    """The row of a measurement that raised `err`."""
    return Row(what, notes=f"failed: {type(err).__name__}: {str(err)[:200]}", failed=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = arguments(__doc__)
    p.add_argument("--root", default="/tmp/c2f-gpu-check", help="scratch folder: demo data, runs, Ray session files")
    p.add_argument("--isnet", default="", help="ISNet ONNX file ('' = the cache of `coarse2fine weights isnet`)")
    p.add_argument("--budget", type=float, default=480.0, help="start no measurement after this many seconds "
                   "(gpu_check.sh stops everything at 570)")
    p.add_argument("--train-size", type=int, default=512, help="training crop side (px; a GPU-sized crop)")
    p.add_argument("--train-batch", type=int, default=16, help="images per training step")
    p.add_argument("--train-iters", type=int, default=45, help="steps; the rate is that of the last third")
    p.add_argument("--predict-size", type=int, default=512, help="prediction image side (px)")
    p.add_argument("--predict-batch", type=int, default=16, help="images per batched forward pass")
    p.add_argument("--coarse-repeat", type=int, default=10, help="coarse: the demo's 60 images repeated this often")
    p.add_argument("--coarse-methods", default="saliency,ddt,isnet", help="comma-separated coarse.method values")
    p.add_argument("--skip-demo", action="store_true", help="leave out the demo run (the longest measurement)")
    p.add_argument("--allow-cpu", action="store_true", help="run without CUDA (a smoke test of this script only)")
    p.add_argument("--tiny", action="store_true", help="tiny sizes, no Ray (with --allow-cpu: seconds on a CPU)")
    args = p.parse_args(argv)
    if args.tiny:
        args.train_size, args.train_batch, args.train_iters = 64, 2, 3
        args.predict_size, args.predict_batch, args.coarse_repeat = 64, 2, 1
    return args


def demo_overrides(args: argparse.Namespace) -> list[str]:
    """`--set` values of the demo run: run root, data, Ray files under --root; Ray on all cores."""
    root = Path(args.root)
    tiny = ["data.demo_images=6", "train.iterations=2", "train.batch_size=2", "train.crop=[64,64]",
            "rounds.count=1", "model.width=16", "ray.enabled=false"] if args.tiny else []
    return [f"run.root={root / 'runs'}", f"data.root={root / 'data' / 'demo'}", f"ray.temp_dir={root / 'ray'}",
            "ray.num_cpus=0", *tiny]


def demo_config(args: argparse.Namespace):
    from pipeline.config import load_config

    return load_config(REPO / "configs" / "demo.yaml", demo_overrides(args))


def measure_demo(args: argparse.Namespace) -> list[Row]:
    """A fresh `coarse2fine run` of the demo config; total, per-stage seconds and the round-1 training rate."""
    cfg = demo_config(args)
    run_dir = Path(cfg.run.root) / cfg.run.name
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = [a for o in demo_overrides(args) for a in ("--set", o)]
    log = Path(args.root) / "demo.log"
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, str(REPO / "orchestrate.py"), "run", "--config",
                               str(REPO / "configs" / "demo.yaml"), *overrides], cwd=REPO, stdout=out,
                              stderr=subprocess.STDOUT, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    total = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"exit {proc.returncode}: {tail[0][:160]} (see {log})")
    scores = json.loads((run_dir / "scores.json").read_text())
    stages = scores["stages"]
    last, fg = stages[-1], stages[-1]["fg_jaccard"]
    rows = [Row("demo run, total", seconds=f"{total:.1f}",
                notes=f"{len(stages)} scored stages; {last['name']} fg Jaccard {'-' if fg is None else f'{fg:.4f}'}")]
    for s in stages:
        rows.append(Row(f"  demo {s['name']}", rate=f"{s['images'] / max(s['seconds'], 1e-9):.1f}",
                        seconds=f"{s['seconds']:.1f}", notes=f"{s['images']} images"))
    with open(run_dir / "round1" / "train" / "log.csv") as f:
        rates = [r["images_per_s"] for r in csv.DictReader(f) if r.get("images_per_s")]
    train = json.loads((run_dir / "round1" / "train" / "manifest.json").read_text())["summary"]
    rows.append(Row("  demo round1/train", rate=rates[-1] if rates else "-", seconds=f"{train.get('seconds', 0):.1f}",
                    notes=f"real data, crop {cfg.train.crop}, batch {cfg.train.batch_size} (log.csv, last window)"))
    return rows


class Synthetic(torch.utils.data.Dataset):
    """One fixed random image and label map served as every sample: measures the step, not image decoding."""

    def __init__(self, side: int):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(3, side, side, generator=g)
        self.y = torch.randint(0, NUM_CLASSES, (side, side), generator=g)

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y


def model_config(args: argparse.Namespace):
    from pipeline.config import ModelConfig

    return ModelConfig(pretrained="none", width=16 if args.tiny else 96)  # weights do not change the speed


def measure_train(args: argparse.Namespace, device: torch.device) -> list[Row]:
    """train_model's images/s on synthetic batches: CUDA defaults (bf16 + channels_last) vs both off."""
    from pipeline.config import TrainConfig
    from pipeline.learn.engine import train_model
    from pipeline.models import build_model

    rows = []
    third = max(1, args.train_iters // 3)
    for label, setting in (("bf16 + channels_last", "cuda"), ("fp32, NCHW", "off")):
        cfg = TrainConfig(iterations=args.train_iters, batch_size=args.train_batch, crop=(args.train_size,) * 2,
                          amp=setting, channels_last=setting, log_every=third, checkpoint_every=args.train_iters,
                          warmup_iters=1)
        out = Path(args.root) / f"train_{setting}"
        shutil.rmtree(out, ignore_errors=True)
        torch.manual_seed(0)
        model = build_model(model_config(args), NUM_CLASSES)
        peak = reset_peak(device)
        start = time.perf_counter()
        train_model(model, Synthetic(args.train_size), cfg, out, seed=0, resume=False, device=str(device))
        seconds = time.perf_counter() - start
        with open(out / "log.csv") as f:
            rate = [r["images_per_s"] for r in csv.DictReader(f) if r.get("images_per_s")][-1]
        rows.append(Row(f"train, {label}", rate=f"{float(rate):.1f}", seconds=f"{seconds:.1f}",
                        notes=f"{args.train_iters} steps x {args.train_batch} x {args.train_size}px, "
                              f"last {third} steps{peak()}"))
        del model
    return rows


def reset_peak(device: torch.device) -> Callable[[], str]:
    """Start counting the device's peak memory; the returned function says it (", peak X GiB"; "" on a CPU)."""
    if device.type != "cuda":
        return lambda: ""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return lambda: f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"


def measure_predict(args: argparse.Namespace, device: torch.device) -> list[Row]:
    """Batched forward passes (bf16 + channels_last, fp32) and the predict stage's one-image path."""
    import numpy as np

    from pipeline.learn.inference import predict_probs
    from pipeline.models import build_model

    torch.manual_seed(0)
    model = build_model(model_config(args), NUM_CLASSES).to(device).eval()
    b, side = args.predict_batch, args.predict_size
    rows, repeats = [], 2 if args.tiny else 10
    sync = torch.cuda.synchronize if device.type == "cuda" else None  # device work is queued: wait for it
    for label, amp in (("bf16 + channels_last", True), ("fp32, NCHW", False)):
        fmt = torch.channels_last if amp else torch.contiguous_format
        net = model.to(memory_format=fmt)
        x = torch.randn(b, 3, side, side, device=device).contiguous(memory_format=fmt)

        @torch.no_grad()
        def step() -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = net(x)["out"]
            return torch.softmax(logits.float(), dim=1).argmax(dim=1)

        peak = reset_peak(device)
        per_batch = median_seconds(step, repeats, warmup=3, sync=sync)
        rows.append(Row(f"predict batched, {label}", rate=f"{b / per_batch:.1f}", seconds=f"{per_batch:.3f}",
                        notes=f"batch {b} x {side}px, no_grad, median of {repeats}{peak()}"))
    model = model.to(memory_format=torch.contiguous_format)
    image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    per_image = median_seconds(lambda: predict_probs(model, image, flip=True, device=device), repeats, 3, sync)
    rows.append(Row("predict stage path (1 image, flip)", rate=f"{1 / per_image:.1f}", seconds=f"{per_image:.3f}",
                    notes=f"predict_probs as stages/predict.py calls it, {side}px, fp32"))
    return rows


def measure_coarse(args: argparse.Namespace) -> list[Row]:
    """stages.coarse.run per method on the demo images repeated, on a local Ray cluster (GPU task when present)."""
    from pipeline.data.demo import ensure_demo
    from pipeline.data.weak import load_weak_dataset
    from pipeline.models.weights import WeightsError, isnet_path
    from pipeline.orchestration.parallel import ray_session
    from pipeline.stage import Record, StageContext
    from stages import coarse

    cfg = demo_config(args)
    ensure_demo(cfg.data)
    dataset = load_weak_dataset(cfg.data)
    records = tuple(Record(f"{r.stem}__{k}", r.image, r.label) for k in range(args.coarse_repeat)
                    for r in dataset.records)
    try:
        isnet, isnet_error = isnet_path(args.isnet), None
    except WeightsError as err:
        isnet, isnet_error = None, err
    rows = []
    with ray_session(cfg.ray):
        import ray

        gpus = int(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0
        for method in args.coarse_methods.split(","):
            if method == "isnet" and isnet is None:  # a file that was asked for and is not there: a failure
                rows.append(failed("coarse isnet", isnet_error) if args.isnet else
                            Row("coarse isnet", notes=f"skipped: {isnet_error}"))
                continue
            c = dataclasses.replace(cfg, coarse=dataclasses.replace(cfg.coarse, method=method,
                                                                    isnet_weights=str(isnet or "")))
            dst = Path(args.root) / "coarse" / method
            shutil.rmtree(dst, ignore_errors=True)
            ctx = StageContext(cfg=c, records=records, classes=dataset.classes, run_dir=dst.parent)
            start = time.perf_counter()
            try:
                summary = coarse.run(ctx, None, dst)
            except Exception as err:  # the other methods still run
                rows.append(failed(f"coarse {method}", err))
                continue
            seconds = time.perf_counter() - start
            where = "per-image CPU tasks" if method == "saliency" else f"one device task (Ray sees {gpus} GPU)"
            rows.append(Row(f"coarse {method}", rate=f"{summary['images'] / seconds:.1f}", seconds=f"{seconds:.1f}",
                            notes=f"{summary['images']} images ({len(dataset.records)} x {args.coarse_repeat}), "
                                  f"{where}, model loading included"))
    return rows


def format_table(rows: list[Row], header: str) -> str:
    """`header`, then one aligned line per row."""
    width = max(len(r.what) for r in rows)
    lines = [header, f"{'measurement':<{width}}  {'images/s':>9}  {'seconds':>8}  notes"]
    lines += [f"{r.what:<{width}}  {r.rate:>9}  {r.seconds:>8}  {r.notes}" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        fail(f"gpu_check: no CUDA device visible to torch {torch.__version__} (built for CUDA {torch.version.cuda})")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    Path(args.root).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    start, rows = time.perf_counter(), []
    steps = [("demo run", lambda: measure_demo(args)), ("train", lambda: measure_train(args, device)),
             ("predict", lambda: measure_predict(args, device)), ("coarse", lambda: measure_coarse(args))]
    for name, step in steps:
        if name == "demo run" and args.skip_demo:
            rows.append(Row(name, notes="skipped: --skip-demo"))
            continue
        if time.perf_counter() - start > args.budget:
            rows.append(Row(name, notes=f"skipped: past the {args.budget:.0f} s budget"))
            continue
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        try:
            rows += step()
        except Exception as err:  # one failed measurement must not hide the others
            rows.append(failed(name, err))
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU (smoke test, not a measurement)"
    print(format_table(rows, f"coarse2fine GPU check on {name}, torch {torch.__version__}, "
                             f"{os.cpu_count()} CPUs, {time.perf_counter() - start:.0f} s"))
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
