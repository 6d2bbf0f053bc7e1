"""The driver's Python allocations per image: a whole run (coarse -> crf, scored) traced in this process, N vs N.

    .venv/bin/python benchmarks/driver_memory.py --sizes 1000 10000 --shape 120 160

`benchmarks/scale.py` measures the driver's RSS, but that is mostly torch and Ray's client, whose peak moves by
more from run to run than a few KiB per image add at N = 10,000. Here the driver (`run_pipeline`) runs in this
process with `tracemalloc` on, so every Python object it allocates is counted; Ray's workers run the per-image tasks
as in any run. After a warm-up run (imports), for each N (the scale benchmark's images, class-agnostic, saliency
coarse maps, no rounds): the peak of traced allocations, this process's VmHWM, and the growth per image between the
first and the last N. SQLite's pages (the records table, the decode cache) are not Python allocations: its page
cache is bounded per connection.
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

from common import MIB, REPO, arguments, peak_rss
from pipeline.config import load_config
from pipeline.orchestration.runner import run_pipeline
from scale import make_images
from stages import WEAK_STAGES


def measure(data: Path, runs: Path, n: int, cpus: int) -> dict:
    """Run coarse -> crf on the `n` images in `data` in this process: its traced peak, VmHWM (MiB) and seconds."""
    cfg = load_config(REPO / "configs" / "base.yaml", [
        f"run.name=driver_{n}", f"run.root={runs}", "data.kind=folder", f"data.root={data}", "data.labels=''",
        "data.classes=''", "data.class_agnostic=true", "data.gt_foreground_value=255", "data.gt_ignore_values=[]",
        "coarse.method=saliency", "rounds.count=0", f"ray.num_cpus={cpus}"])
    gc.collect()
    tracemalloc.start()
    start = time.time()
    run_pipeline(cfg, WEAK_STAGES)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"n": n, "traced_peak_mib": peak / MIB, "vm_hwm_mib": peak_rss() / MIB, "seconds": time.time() - start}


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="values of N, in order")
    parser.add_argument("--shape", type=int, nargs=2, default=[120, 160], metavar=("H", "W"),
                        help="image size (scale.py's default, so its cached images serve both)")
    parser.add_argument("--root", type=Path, default=REPO / "runs" / "scale", help="where the images are cached")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="Ray CPUs (all cores)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    rows = []
    with tempfile.TemporaryDirectory(prefix="driver_memory_") as runs:
        for i, n in enumerate(args.sizes):
            data = args.root / f"data_{n}_{args.shape[0]}x{args.shape[1]}"
            # made in a child process: making them here would intern their file names in this one and inflate
            # the interpreter's string table, a one-time allocation the next run would be charged with
            maker = multiprocessing.get_context("spawn").Process(target=make_images,
                                                                 args=(data, n, tuple(args.shape), args.cpus))
            maker.start()
            maker.join()
            if i == 0:  # warm-up, not counted: the first run imports Ray's and the stages' modules
                measure(data, Path(runs) / "warmup", n, args.cpus)
            rows.append(measure(data, Path(runs), n, args.cpus))
            print(f"N={n}: traced peak {rows[-1]['traced_peak_mib']:.2f} MiB, VmHWM {rows[-1]['vm_hwm_mib']:.0f} "
                  f"MiB, {rows[-1]['seconds']:.0f} s", flush=True)
    first, last = rows[0], rows[-1]
    per_image = (last["traced_peak_mib"] - first["traced_peak_mib"]) * MIB / (last["n"] - first["n"])
    print(f"\ntraced Python allocations of the driver grow {per_image:.1f} bytes per image "
          f"(N {first['n']:,} -> {last['n']:,}: {first['traced_peak_mib']:.2f} -> {last['traced_peak_mib']:.2f} MiB)")
    print(f"VmHWM (the whole process, cumulative over both runs): {first['vm_hwm_mib']:.0f} -> "
          f"{last['vm_hwm_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
