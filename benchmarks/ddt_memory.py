"""Peak memory of DDT's statistics pass vs the group's size: the streaming sums (`DDTSums`) stay flat in N, the old
batch path (every map kept, all descriptors stacked in float64) grows linearly.

    PYTHONPATH=. .venv/bin/python benchmarks/ddt_memory.py                    # N = 1000 and 10000 (a few minutes)
    PYTHONPATH=. .venv/bin/python benchmarks/ddt_memory.py --sizes 100 1000

Synthetic group: N feature maps of 1280 x 14 x 14 (a 448-px image's head map), drawn one at a time, as pass 1 sees
them. Each N runs in a fresh child process, which reports its tracemalloc peak (numpy's allocations in the pass) and
its peak RSS (the whole process: Python, numpy, BLAS). The old path's bytes are estimated from its arrays (maps kept
float32, descriptors stacked float32, their float64 copy, the centred float64 copy, covariance and eigenvectors);
the estimate is checked against a measured run of the old path at a small N. Peak RSS includes the interpreter and
the imported torch, the same for every N.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.coarse.ddt import DDTSums, ddt_statistics, orient_component  # noqa: E402

C, H, W = 1280, 14, 14
MIB = 2**20


def maps(n: int, seed: int = 0):
    """n fresh [C, H, W] float32 maps, one alive at a time."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield rng.random((C, H, W), dtype=np.float32) * 6.0  # the head's ReLU6 range


def old_bytes(n: int) -> int:
    """Estimated peak of the batch path: maps + stacked float32 + float64 copy + centred float64 (per element), plus
    the covariance and its eigenvectors ([C, C] float64 each)."""
    return n * C * H * W * (4 + 4 + 8 + 8) + 2 * C * C * 8


def measure(n: int, path: str) -> dict:
    """Run one statistics pass in this process; tracemalloc peak, peak RSS and seconds."""
    tracemalloc.start()
    start = time.perf_counter()
    if path == "stream":
        sums = DDTSums.zeros(C)
        for f in maps(n):
            sums.add(f)
        sums.statistics()
    else:
        held = list(maps(n))
        mean, pc = ddt_statistics(np.concatenate([f.reshape(C, -1).T for f in held]))
        orient_component(pc, mean, held)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"n": n, "path": path, "traced": peak, "rss": rss, "seconds": seconds}


def in_child(n: int, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", str(n), path], check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--check-old", type=int, default=50, help="N for the measured run of the old batch path")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(int(args.child[0]), args.child[1])))
        return

    print(f"statistics pass over N synthetic maps of {C}x{H}x{W} float32; peaks in MiB")
    rows = [in_child(n, "stream") for n in args.sizes]
    for r in rows:
        print(f"streaming  N={r['n']:>6}: tracemalloc peak {r['traced'] / MIB:8.1f}  peak RSS {r['rss'] / MIB:8.1f}"
              f"  ({r['seconds']:.0f} s)   old batch path, estimated {old_bytes(r['n']) / MIB:10.0f}")
    first, last = rows[0], rows[-1]
    print(f"ratio N={last['n']} / N={first['n']}: tracemalloc {last['traced'] / first['traced']:.3f}, "
          f"RSS {last['rss'] / first['rss']:.3f}; old batch path {old_bytes(last['n']) / old_bytes(first['n']):.0f}")
    old = in_child(args.check_old, "old")
    print(f"old batch path measured at N={old['n']}: tracemalloc peak {old['traced'] / MIB:.1f} MiB "
          f"(estimate {old_bytes(old['n']) / MIB:.1f} MiB)")


if __name__ == "__main__":
    main()
