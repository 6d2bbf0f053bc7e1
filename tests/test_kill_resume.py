"""Issue 7: `coarse2fine run` killed with SIGKILL (the whole process group) at fixed points, then the same command
again, ends with outputs byte-identical to an uninterrupted run; nothing partial ever counts as done; a Ray worker
killed mid-task is retried.

One uninterrupted reference run (module fixture, in this process, no Ray) is shared. Kill points: the first
`crf/<stem>.png` (mid per-image stage; without Ray, and with Ray, whose workers outlive the kill by a few seconds),
then in the rerun the first `round1/train/last.pt` (mid-training).
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Callable

import pytest
import torch
from kill_helpers import (ROOT, TINY, command, kill_group, outputs, partial_files, run_to_end, score_rows, start_run, wait_for,
                          wait_gone, weights_equal)

from pipeline.config import RayConfig, load_config
from pipeline.io import read_json
from pipeline.orchestration import parallel
from pipeline.orchestration.parallel import map_tasks, run_on_device
from pipeline.orchestration.runner import run_pipeline
from stages import WEAK_STAGES

STEMS_COUNT = 8


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(data folder, run dir, stems) of one uninterrupted run, in this process; it also generates the demo data."""
    tmp = tmp_path_factory.mktemp("kill_ref")
    run_pipeline(load_config(ROOT / "configs" / "demo.yaml",
                             [*TINY, f"data.root={tmp / 'data'}", f"run.root={tmp / 'runs'}", "ray.enabled=false"]),
                 WEAK_STAGES)
    run_dir = tmp / "runs" / "demo"
    stems = sorted(p.stem for p in (run_dir / "coarse").glob("*.png"))
    assert len(stems) == STEMS_COUNT
    return tmp / "data", run_dir, stems


def test_killed_mid_crf_then_mid_training_resumes_to_identical_outputs(reference, tmp_path):
    data, ref, stems = reference
    run_dir = tmp_path / "runs" / "demo"
    cmd = command(data, tmp_path / "runs", "ray.enabled=false")
    log = tmp_path / "log.txt"

    # Kill 1: the first CRF output has just appeared.
    proc = start_run(cmd, log)
    assert wait_for(proc, run_dir, "crf/*.png") is not None, log.read_text()
    kill_group(proc)
    assert (run_dir / "coarse" / "DONE").is_file()
    assert not (run_dir / "crf" / "DONE").exists()  # killed stage: not finished
    assert not (run_dir / "round1").exists() and not (run_dir / "scores.json").exists()
    finished = sorted(p.stem for p in (run_dir / "crf").glob("*.png"))
    assert 1 <= len(finished) < STEMS_COUNT
    assert partial_files(run_dir, stems) == []

    # Kill 2: the rerun, when round 1 has written its first checkpoint.
    proc = start_run(cmd, log)
    assert wait_for(proc, run_dir, "round1/train/last.pt") is not None, log.read_text()
    kill_group(proc)
    train = run_dir / "round1" / "train"
    assert (run_dir / "crf" / "DONE").is_file() and not (train / "DONE").exists()
    iteration = torch.load(train / "last.pt", weights_only=True)["iteration"]
    assert 2 <= iteration < 6  # mid-training
    assert partial_files(run_dir, stems) == []
    # the rerun kept the images written before kill 1 and computed only the others
    summary = read_json(run_dir / "crf" / "manifest.json")["summary"]
    assert (summary["skipped"], summary["images"]) == (len(finished), STEMS_COUNT - len(finished))

    # Rerun to the end: training resumes from the checkpoint; everything equals the uninterrupted run.
    text = run_to_end(cmd, log)
    assert f"resuming {train} from iteration {iteration}" in text
    assert outputs(run_dir) == outputs(ref)
    assert score_rows(run_dir) == score_rows(ref)
    for k in (1, 2):
        assert weights_equal(run_dir / f"round{k}" / "train" / "model.pt", ref / f"round{k}" / "train" / "model.pt")
    assert partial_files(run_dir, stems) == []


def test_killed_with_ray_mid_crf_resumes_to_identical_outputs(reference, tmp_path):
    data, ref, stems = reference
    run_dir = tmp_path / "runs" / "demo"
    ray_tmp = tempfile.mkdtemp(prefix="c2f-kill-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    # rounds.count is in no stage's hash: coarse and crf of this run must equal those of the two-round reference.
    cmd = command(data, tmp_path / "runs", "ray.enabled=true", "rounds.count=0", f"ray.temp_dir={ray_tmp}")
    log = tmp_path / "log.txt"
    try:
        proc = start_run(cmd, log)
        assert wait_for(proc, run_dir, "crf/*.png") is not None, log.read_text()
        workers = kill_group(proc)
        assert workers, "CRF tasks run in Ray workers outside the orchestrator's process group"
        wait_gone(workers, timeout=60)  # each notices its raylet is gone and exits by itself
        assert (run_dir / "coarse" / "DONE").is_file() and not (run_dir / "crf" / "DONE").exists()
        assert partial_files(run_dir, stems) == []
        run_to_end(cmd, log)  # a fresh local cluster in the same ray.temp_dir
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert outputs(run_dir) == outputs(ref, ["coarse", "crf"])  # and Ray equals serial, byte for byte
    assert score_rows(run_dir) == score_rows(ref)[:2]
    assert partial_files(run_dir, stems) == []


def die_on_first_attempt() -> Callable[[tuple[str, int]], int]:
    """A Ray task (a closure: cloudpickle ships it by value, workers need not import this file) that SIGKILLs its own
    worker process on its first attempt at an odd item, and otherwise returns item * 10."""
    def task(item: tuple[str, int]) -> int:
        folder, value = item
        marker = Path(folder) / f"attempt-{value}"
        attempts = int(marker.read_text()) + 1 if marker.exists() else 1
        marker.write_text(str(attempts))
        if value % 2 and attempts == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return value * 10
    return task


def test_ray_worker_killed_mid_task_is_retried(ray_cluster, tmp_path, monkeypatch):
    cfg = RayConfig(task_memory_mb=0)
    items = [(str(tmp_path), v) for v in range(4)]
    task = die_on_first_attempt()
    assert map_tasks(task, items, cfg, desc="die once") == [0, 10, 20, 30]
    assert [int((tmp_path / f"attempt-{v}").read_text()) for v in range(4)] == [1, 2, 1, 2]  # killed ones ran twice
    device = tmp_path / "device"
    device.mkdir()
    assert run_on_device(task, (str(device), 1), cfg=cfg) == 10  # a training task killed mid-round
    assert (device / "attempt-1").read_text() == "2"
    # Without retries the worker's death reaches the caller as an error (it is not silently dropped).
    again = tmp_path / "again"
    again.mkdir()
    with pytest.raises(ray_cluster.exceptions.WorkerCrashedError):
        monkeypatch.setattr(parallel, "TASK_RETRIES", 0)
        map_tasks(task, [(str(again), 1)], cfg, desc="die")
