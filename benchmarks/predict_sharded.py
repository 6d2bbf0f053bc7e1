"""The `predict` stage's images/s serial (one process) vs sharded on Ray CPU actors, on a finished run's round 1.

    coarse2fine run --config configs/demo.yaml --set run.root=/tmp/scale_runs --set rounds.count=1
    python benchmarks/predict_sharded.py --run /tmp/scale_runs/demo --cpus 2 --actors 1 2

Predicts round 1 of the run again with its `model.pt`, into fresh folders under --out: serially in this process
(torch on --threads threads; 0 = torch's default), then sharded on a local Ray cluster of --cpus CPUs with
`ray.actors` = each value of --actors. Prints images/s of each, and whether each sharded output equals the serial
one byte for byte (expected when the actors run as many torch threads as the serial process; a CPU actor runs its
CPU share rounded up, see pipeline/orchestration/sharded.py). Each pass starts its own actors (a process, torch,
the model), so besides the overall rate the "steady" rate counts only the time between the first and the last image
written. Each sharded setting runs twice (the first pass also warms Ray's task workers).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import arguments, fail, require
from pipeline.commands.trained import RunError, read_run
from pipeline.data.weak import load_weak_dataset
from pipeline.orchestration.parallel import ray_session
from pipeline.orchestration.sharded import cluster_actors
from pipeline.stage import StageContext
from stages import predict

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def files(folder: Path) -> dict[str, bytes]:
    """{name: bytes} of the `.png` and `.npz` outputs in `folder`."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".png", ".npz")}


def timed_predict(ctx: StageContext, run_dir: Path, out: Path) -> str:
    """One predict.run of round 1 into the empty folder `out`: "<s> s -> <n>/s overall, <n>/s steady", steady being
    the rate between the first and the last `.png` written (without start-up: actors, model loading)."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = predict.run(ctx, run_dir / "round1" / "train", out)
    seconds = time.perf_counter() - start
    assert summary["images"] == len(ctx.records), summary
    written = sorted(p.stat().st_mtime for p in out.glob("*.png"))
    steady = (len(written) - 1) / max(written[-1] - written[0], 1e-9)
    return f"{seconds:.1f} s -> {len(written) / seconds:.2f} images/s overall, {steady:.2f} images/s steady"


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--run", type=Path, required=True, help="a run directory with round1/train/model.pt")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (this machine's)")
    parser.add_argument("--actors", type=int, nargs="+", default=[2], help="ray.actors values to time (one per CPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the serial run (0 = torch's)")
    parser.add_argument("--out", type=Path, default=None, help="scratch folder (None: a new temp folder)")
    args = parser.parse_args()
    require(args.run / "round1" / "train" / "model.pt", "--run: a finished run with round 1")

    import torch

    try:
        cfg, classes, _ = read_run(args.run)
    except RunError as err:
        fail(str(err))
    records = load_weak_dataset(cfg.data).records
    out = args.out or Path(tempfile.mkdtemp(prefix="predict_sharded_"))
    if args.threads:
        torch.set_num_threads(args.threads)
    serial_cfg = dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, enabled=False))
    ctx = StageContext(cfg=serial_cfg, records=records, classes=classes, run_dir=args.run, round=1)
    timing = timed_predict(ctx, args.run, out / "serial")
    print(f"serial, torch threads {torch.get_num_threads()}, {len(records)} images: {timing}")
    reference = files(out / "serial")

    for actors in args.actors:
        ray_cfg = dataclasses.replace(cfg.ray, enabled=True, address="", num_cpus=args.cpus, actors=actors,
                                      temp_dir=str(out / "ray"))
        sharded = dataclasses.replace(cfg, ray=ray_cfg)
        ctx = StageContext(cfg=sharded, records=records, classes=classes, run_dir=args.run, round=1)
        with ray_session(ray_cfg):
            plan = cluster_actors(ray_cfg)
            for attempt in ("first pass", "second pass"):
                folder = out / f"actors{actors}"
                timing = timed_predict(ctx, args.run, folder)
                same = files(folder) == reference
                print(f"sharded, {plan.actors} actors x {plan.threads} torch threads ({plan.num_cpus:.2f} CPUs each), "
                      f"{attempt}: {timing}; outputs {'identical to' if same else 'DIFFERENT from'} serial")


if __name__ == "__main__":
    main()
