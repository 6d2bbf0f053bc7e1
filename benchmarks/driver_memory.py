"""The driver's memory per image: a whole run (coarse -> crf, scored) in this process, its Python allocations traced.

    .venv/bin/python benchmarks/driver_memory.py --sizes 1000 10000 --shape 120 160

`benchmarks/scale.py` measures the driver's RSS, but that is ~640 MiB of torch and Ray client whose peak moves by
tens of MiB from run to run: a few KiB per image do not show at N = 10,000. Here the driver (`run_pipeline`) runs
in this process with `tracemalloc` on, so every Python object it allocates is counted; Ray's workers run the
per-image tasks as in any run. After a warm-up run (imports), for each N (the scale benchmark's images, class-agnostic, saliency coarse maps,
no rounds): the peak of traced allocations, this process's VmHWM, and the growth per image between the first and
the last N. SQLite's pages (the records table, the decode cache) are not Python allocations: the page cache is
bounded (~2 MB per connection).
"""
from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scale import make_images  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.orchestration.runner import run_pipeline  # noqa: E402
from stages import WEAK_STAGES  # noqa: E402

MIB = 2**20


def vm_hwm_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(data: Path, runs: Path, n: int, cpus: int) -> dict:
    cfg = load_config(ROOT / "configs" / "base.yaml", [
        f"run.name=driver_{n}", f"run.root={runs}", "data.kind=folder", f"data.root={data}", "data.labels=''",
        "data.classes=''", "data.class_agnostic=true", "data.gt_foreground_value=255", "data.gt_ignore_values=[]",
        "coarse.method=saliency", "rounds.count=0", f"ray.num_cpus={cpus}"])
    gc.collect()
    tracemalloc.start()
    start = time.time()
    run_pipeline(cfg, WEAK_STAGES)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"n": n, "traced_peak_mib": peak / MIB, "vm_hwm_mib": vm_hwm_mib(), "seconds": time.time() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--shape", type=int, nargs=2, default=[120, 160])
    parser.add_argument("--root", type=Path, default=ROOT / "runs" / "scale", help="where the images are cached")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
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
