"""Kill a whole `coarse2fine run` with SIGKILL at a chosen moment, and compare what a rerun leaves with a reference.

Used by tests/test_kill_resume.py and benchmarks/soak_kill.py (so the soak checks exactly what the tests check).

    proc = start_run(command(data, runs, "ray.enabled=false"), log)
    wait_for(proc, runs / "demo", "crf/*.png")      # the first CRF output appears
    orphans = kill_group(proc)                       # SIGKILL the orchestrator's process group
    wait_gone(orphans)                               # Ray workers live in their own groups: wait until they exit

The run is started in its own session (`start_new_session=True`), so `os.killpg` reaches the orchestrator, Ray's GCS,
raylet and agents at once. Ray starts each worker in a process group of its own, so a worker busy with a task is
not in that group: it exits by itself once it notices its raylet is gone (a few seconds; measured 3.4 s for a
training task). `kill_group` freezes the group first (SIGSTOP: no new workers), lists those workers, then kills.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from pipeline.io import load_mask, load_probs, read_json

ROOT = Path(__file__).resolve().parent.parent
# A tiny demo run (about 10 s without Ray on 2 cores): 8 images, 6 iterations per round with a checkpoint every 2,
# so a kill when the first last.pt appears leaves 4 iterations still to do.
TINY = ["data.demo_images=8", "data.holdout=''", "model.width=16",  # no held-out photos: tests/test_holdout.py
        "train.iterations=6", "train.batch_size=2", "train.crop=[64,64]",
        "train.checkpoint_every=2", "rounds.count=2", "test_time.flip=false", "ray.num_cpus=2"]
STEPS = ["coarse", "crf", "round1/train", "round1/predict", "round1/crf", "round2/train", "round2/predict",
         "round2/crf"]


def command(data: Path, runs: Path, *extra: str) -> list[str]:
    """`coarse2fine run` (orchestrate.py) on the tiny demo config, with `extra` overrides."""
    cmd = [sys.executable, str(ROOT / "orchestrate.py"), "run", "--config", str(ROOT / "configs" / "demo.yaml")]
    for item in [*TINY, f"data.root={data}", f"run.root={runs}", *extra]:
        cmd += ["--set", item]
    return cmd


def start_run(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start `cmd` in a new session (its own process group), output appended to `log`."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # never join another cluster
    env["RAY_AUTH_MODE"] = "disabled"
    env["OMP_NUM_THREADS"] = "1"  # torch on one thread in every Ray task, as the in-process reference runs
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def run_to_end(cmd: list[str], log: Path, timeout: float = 300) -> str:
    """Run `cmd` uninterrupted; returns its output, raises if it fails."""
    proc = start_run(cmd, log)
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise
    text = log.read_text(errors="replace")
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {code}:\n{text[-3000:]}")
    return text


def wait_for(proc: subprocess.Popen, run_dir: Path, pattern: str, timeout: float = 240) -> Path | None:
    """Poll every 2 ms until a file matching `pattern` (a glob below `run_dir`) exists; None if the run ends first."""
    folder, _, name = pattern.rpartition("/")
    where = run_dir / folder
    end = time.time() + timeout
    while time.time() < end:
        if where.is_dir():
            hits = sorted(where.glob(name))
            if hits:
                return hits[0]
        if proc.poll() is not None:
            return None
        time.sleep(0.002)
    raise TimeoutError(f"{run_dir / pattern} did not appear within {timeout} s")


def _procs() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, state) of every process, from /proc."""
    out = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(name)] = (int(fields[1]), int(fields[2]), fields[0])
    return out


def kill_group(proc: subprocess.Popen) -> list[int]:
    """SIGKILL the run's process group; returns the pids of Ray workers (own groups) that were its children."""
    pgid = proc.pid  # start_new_session: the orchestrator leads its own group
    try:
        os.killpg(pgid, signal.SIGSTOP)  # freeze: the raylet cannot start workers while we look
    except ProcessLookupError:
        proc.wait()
        return []
    procs = _procs()
    group = {pid for pid, (_, g, _) in procs.items() if g == pgid}
    workers = [pid for pid, (ppid, g, _) in procs.items() if ppid in group and g != pgid]
    os.killpg(pgid, signal.SIGKILL)
    proc.wait()
    return workers


def wait_gone(pids: list[int], timeout: float = 60) -> float:
    """Seconds until every process in `pids` has exited (zombies count as exited); TimeoutError after `timeout`."""
    start = time.time()
    while True:
        procs = _procs()
        alive = [p for p in pids if p in procs and procs[p][2] != "Z"]
        if not alive:
            return time.time() - start
        if time.time() - start > timeout:
            raise TimeoutError(f"Ray workers {alive} still running {timeout} s after the kill")
        time.sleep(0.05)


def outputs(run_dir: Path, steps: list[str] = STEPS) -> dict[str, bytes]:
    """Every per-image output (.png / .npz) of the named steps, by path relative to the run directory."""
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for s in steps if (run_dir / s).is_dir()
            for p in sorted((run_dir / s).iterdir()) if p.suffix in (".png", ".npz") and not p.name.startswith(".")}


def score_rows(run_dir: Path) -> list[dict]:
    """scores.json's rows without their wall-clock seconds."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_json(run_dir / "scores.json")["stages"]]


def weights_equal(a: Path, b: Path) -> bool:
    """Two state_dict files hold the same tensors bit for bit."""
    wa, wb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def partial_files(run_dir: Path, stems: list[str]) -> list[str]:
    """Problems a kill must never cause: an unreadable `<stem>.png`/`.npz`, a `.png` without its `.npz`, a temp file
    that a stage could take for output, a DONE stage missing an image. Empty when all is well."""
    problems = []
    for step in STEPS:
        folder = run_dir / step
        if not folder.is_dir():
            continue
        for tmp in folder.glob("*.tmp"):
            if not tmp.name.startswith("."):
                problems.append(f"{tmp}: temp file that looks like output")
        for png in folder.glob("*.png"):
            try:
                load_mask(png)
                load_probs(png.with_suffix(".npz"))
            except (ValueError, OSError) as err:
                problems.append(f"{png}: {err}")
        if (folder / "DONE").is_file() and not step.endswith("/train"):
            problems += [f"{folder}: DONE but {s}.png missing" for s in stems if not (folder / f"{s}.png").is_file()]
        if (folder / "DONE").is_file() and step.endswith("/train") and not (folder / "model.pt").is_file():
            problems.append(f"{folder}: DONE but model.pt missing")
    return problems


def running_stage(run_dir: Path) -> str:
    """The stage a killed run was in, from the manifests: started (manifest.json) but not finished (no DONE)."""
    for step in STEPS:
        folder = run_dir / step
        if (folder / "manifest.json").is_file() and not (folder / "DONE").is_file():
            return step
    done = [s for s in STEPS if (run_dir / s / "DONE").is_file()]
    if not done:
        return "start-up"
    if (run_dir / "scores.json").is_file() and len(done) == len(STEPS):
        return "finished"
    return f"after {done[-1]} (scoring)"
