"""Wall time per stage, peak memory of every process, and the rerun time of the demo (issue 2's targets).

    .venv/bin/python benchmarks/pipeline_demo.py                     # fresh run into runs/demo_bench, then a rerun
    .venv/bin/python benchmarks/pipeline_demo.py --set train.iterations=60

Runs `coarse2fine run --config configs/demo.yaml` as a subprocess with its own run name and Ray temp dir, samples
the summed RSS of that process and all its descendants (the driver, Ray's GCS/raylet and every worker) every 0.25 s,
then prints each stage's seconds (from its manifest), the score table, the peak memory, and the time of a second,
identical run (which must recompute nothing). Targets: total <= 300 s on 2 cores, peak <= 6 GiB, crf > coarse and
the last round >= crf.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tree_rss(root_pid: int) -> int:
    """Summed RSS (bytes) of `root_pid` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            statm = Path(f"/proc/{name}/statm").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(name))
        rss[int(name)] = int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def timed_run(cmd: list[str]) -> tuple[float, int, int]:
    """(seconds, peak RSS of the whole process tree, exit code) of one command."""
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.25)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    code = proc.wait()
    thread.join()
    return time.time() - start, peak[0], code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    parser.add_argument("--name", default="demo_bench", help="run name (runs/<name> is deleted first)")
    args = parser.parse_args()
    shutil.rmtree(ROOT / "runs" / args.name, ignore_errors=True)
    temp = f"/tmp/c2f-bench-{os.getpid()}"
    cmd = [str(ROOT / ".venv" / "bin" / "coarse2fine"), "run", "--config", "configs/demo.yaml",
           "--set", f"run.name={args.name}", "--set", f"ray.temp_dir={temp}"]
    for item in args.set:
        cmd += ["--set", item]
    seconds, peak, code = timed_run(cmd)
    if code:
        print(f"run failed with exit code {code}", file=sys.stderr)
        return code
    again, peak_again, code = timed_run(cmd)
    run_dir = ROOT / "runs" / args.name
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
