"""The demo run's seconds per stage, the peak memory of all its processes, and the time of a rerun that reuses all.

    .venv/bin/python benchmarks/pipeline_demo.py                     # fresh run into runs/demo_bench, then a rerun
    .venv/bin/python benchmarks/pipeline_demo.py --set train.iterations=60

Runs `coarse2fine run --config configs/demo.yaml` as a subprocess with its own run name and Ray temp dir, samples
the summed RSS of that process and all its descendants (the driver, Ray's GCS/raylet and every worker) every 0.25 s,
then prints each stage's seconds (from its manifest), the score table, the peak memory, and the time of a second,
identical run (which must recompute nothing). Targets: total <= 300 s on 2 cores, peak <= 6 GiB, crf > coarse and
the last round >= crf.
"""
from __future__ import annotations

import json
import os
import shutil
import sys

from common import REPO, arguments, run_sampled, tree_rss


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    parser.add_argument("--name", default="demo_bench", help="run name (runs/<name> is deleted first)")
    args = parser.parse_args()
    run_dir = REPO / "runs" / args.name
    shutil.rmtree(run_dir, ignore_errors=True)
    temp = f"/tmp/c2f-bench-{os.getpid()}"
    cmd = [sys.executable, str(REPO / "orchestrate.py"), "run", "--config", "configs/demo.yaml",
           "--set", f"run.name={args.name}", "--set", f"ray.temp_dir={temp}"]
    for item in args.set:
        cmd += ["--set", item]
    runs = []
    for _ in range(2):  # the second, identical run must recompute nothing
        seconds, peaks, code = run_sampled(cmd, lambda pid: {"all": tree_rss([pid])}, every_s=0.25)
        if code:
            print(f"run failed with exit code {code}", file=sys.stderr)
            return code
        runs.append((seconds, peaks["all"]))
    (seconds, peak), (again, peak_again) = runs
    scores = json.loads((run_dir / "scores.json").read_text())
    print("\nstage seconds (from each stage's manifest):")
    stage_total = 0.0
    for manifest in sorted(run_dir.glob("**/manifest.json"), key=lambda p: p.stat().st_mtime):
        m = json.loads(manifest.read_text())
        s = float(m.get("summary", {}).get("seconds", 0.0))
        stage_total += s
        print(f"  {m['stage']:<16}{s:8.1f} s")
    print(f"  {'stages total':<16}{stage_total:8.1f} s   (the rest: start-up, Ray, demo data, scoring)")
    rows = scores["stages"]
    coarse, crf, last = rows[0]["miou"], rows[1]["miou"], rows[-1]["miou"]
    print(f"\nfirst run: {seconds:.1f} s wall, peak RSS of all processes {peak / 2**30:.2f} GiB")
    print(f"second run: {again:.1f} s wall (nothing recomputed), peak {peak_again / 2**30:.2f} GiB")
    print(f"mIoU coarse {coarse:.4f} -> crf {crf:.4f} -> last round {last:.4f}: crf > coarse {crf > coarse}, "
          f"last >= crf {last >= crf}")
    print(f"targets: wall <= 300 s {seconds <= 300}, peak <= 6 GiB {peak <= 6 * 2**30}")
    shutil.rmtree(temp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
