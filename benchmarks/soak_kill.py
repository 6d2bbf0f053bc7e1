"""Resume after SIGKILL at N random moments of a tiny `coarse2fine run`: prints how many reruns match a clean run.

    nice -n 5 .venv/bin/python benchmarks/soak_kill.py                # 10 kills, tiny demo, no Ray
    nice -n 5 .venv/bin/python benchmarks/soak_kill.py --ray --kills 5 # with a local Ray cluster per run

First an uninterrupted run of the tiny demo config (tests/kill_helpers.py: 8 images, 2 rounds of 6 iterations) is
timed; that is the reference. Then for each of N kill times drawn (seeded) uniformly over its duration: a fresh run
of the same command is started in its own process group, SIGKILLed (the whole group) at that time, and the same
command is run again to the end. Ray workers, which live in their own process groups, are waited for before the
rerun. Each line shows the kill time, the stage that was running (from the manifests: started, no DONE), problems
found right after the kill (a `<stem>.png`/`.npz` that does not load, a DONE stage missing files, a temp file that
looks like output) and whether every `.png`/`.npz`, both rounds' `model.pt` tensors and scores.json's rows (without
seconds) equal the reference. The last line: "resumed to identical outputs: K/N".
"""
from __future__ import annotations

import importlib.util
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, arguments
from pipeline.config import load_config
from pipeline.data.demo import ensure_demo

# tests/kill_helpers.py, loaded from its file (tests/ is no package): the soak checks exactly what the kill tests check
_spec = importlib.util.spec_from_file_location("kill_helpers", REPO / "tests" / "kill_helpers.py")
kill_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kill_helpers)


def same_as_reference(run_dir: Path, ref: Path) -> list[str]:
    """What differs between a finished run and the reference (empty: identical)."""
    diffs = []
    mine, theirs = kill_helpers.outputs(run_dir), kill_helpers.outputs(ref)
    if mine.keys() != theirs.keys():
        diffs.append(f"files differ: {sorted(mine.keys() ^ theirs.keys())[:4]}")
    diffs += [f"{name} differs" for name in sorted(mine.keys() & theirs.keys()) if mine[name] != theirs[name]][:4]
    for k in (1, 2):
        model = Path(f"round{k}") / "train" / "model.pt"
        if not (run_dir / model).is_file() or not kill_helpers.weights_equal(run_dir / model, ref / model):
            diffs.append(f"{model} differs")
    if kill_helpers.score_rows(run_dir) != kill_helpers.score_rows(ref):
        diffs.append("scores.json rows differ")
    return diffs


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("--kills", type=int, default=10, help="number of killed runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--ray", action="store_true", help="run with a local Ray cluster (else ray.enabled=false)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (else deleted at the end)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="c2f-soak-", dir="/tmp"))  # short path: Ray's sockets live below it
    data = work / "data"
    extra = ["ray.enabled=true", f"ray.temp_dir={work / 'ray'}"] if args.ray else ["ray.enabled=false"]
    extra += args.set
    ensure_demo(load_config(REPO / "configs" / "demo.yaml", [*kill_helpers.TINY, f"data.root={data}"]).data)
    start = time.time()
    kill_helpers.run_to_end(kill_helpers.command(data, work / "ref", *extra), work / "ref.log")
    duration = time.time() - start
    ref = work / "ref" / "demo"
    stems = sorted(p.stem for p in (ref / "coarse").glob("*.png"))
    print(f"reference run: {duration:.1f} s ({'Ray' if args.ray else 'no Ray'}), {len(stems)} images; "
          f"work folder {work}", flush=True)

    rng = random.Random(args.seed)
    identical = 0
    for i in range(args.kills):
        at = rng.uniform(0.0, duration)
        runs, log = work / f"kill{i}", work / f"kill{i}.log"
        cmd = kill_helpers.command(data, runs, *extra)
        proc = kill_helpers.start_run(cmd, log)
        began = time.time()
        while proc.poll() is None and time.time() - began < at:
            time.sleep(0.005)
        finished_first = proc.poll() is not None
        orphans = kill_helpers.kill_group(proc)
        gone = kill_helpers.wait_gone(orphans, timeout=120)
        run_dir = runs / "demo"
        stage = "finished before the kill" if finished_first else kill_helpers.running_stage(run_dir)
        problems = kill_helpers.partial_files(run_dir, stems)
        try:
            kill_helpers.run_to_end(cmd, log)
            diffs = same_as_reference(run_dir, ref) + kill_helpers.partial_files(run_dir, stems)
        except RuntimeError as err:
            diffs = [f"rerun failed: {str(err).splitlines()[0]}"]
        litter = len(list(run_dir.rglob("*.tmp")))
        identical += not diffs and not problems
        verdict = "identical" if not diffs else "DIFFERENT: " + "; ".join(diffs)
        print(f"kill {i + 1:2d} at {at:5.1f} s  stage {stage:<26} workers left {len(orphans)} (gone in {gone:.1f} s)"
              f"  after kill: {'ok' if not problems else '; '.join(problems)}  rerun: {verdict}"
              f"  stray .tmp: {litter}", flush=True)
        if not args.keep:
            shutil.rmtree(runs, ignore_errors=True)
    print(f"resumed to identical outputs: {identical}/{args.kills}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if identical == args.kills else 1


if __name__ == "__main__":
    sys.exit(main())
