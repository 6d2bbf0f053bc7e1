"""The driver holds nothing per image: tasks are fed lazily, per-image stages fold their results as they arrive, and
per-image scores go to a file (issue 29: driver memory independent of N)."""
from __future__ import annotations

import dataclasses
import gc
import math
import tracemalloc
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.config import Config, RayConfig
from pipeline.io import save_image, save_mask, save_probs
from pipeline.metrics import read_per_image
from pipeline.orchestration.parallel import IN_FLIGHT_PER_CPU, stream_tasks
from pipeline.stage import Record, StageContext
from stages import evaluate as evaluate_stage


def squarer() -> Callable[[int], int]:
    """A Ray task as a closure (cloudpickle ships it by value, so workers need not import this file)."""
    def square(i: int) -> int:
        return i * i
    return square


def test_stream_tasks_pulls_items_only_as_slots_free_up(ray_cluster):
    pulled: list[int] = []

    def items():
        for i in range(40):
            pulled.append(i)
            yield i

    pulled_at_first_result, results = None, []
    for result in stream_tasks(squarer(), items(), 40, RayConfig(task_memory_mb=0), desc="lazy"):
        pulled_at_first_result = pulled_at_first_result or len(pulled)
        results.append(result)
    assert pulled_at_first_result <= IN_FLIGHT_PER_CPU * 2  # the test cluster has 2 CPUs: 4 in flight, not 40
    assert sorted(results) == [i * i for i in range(40)]


def tiny_run(root: Path, n: int) -> tuple[StageContext, Path]:
    """n records of one 8 x 8 image and its ground truth (a square), each with a soft map + pseudo-label in
    root/coarse: odd ones match the square, even ones cover half of it."""
    yy, xx = np.mgrid[:8, :8]
    truth = ((yy >= 2) & (yy < 6) & (xx >= 2) & (xx < 6)).astype(np.uint8)
    save_image(root / "image.png", np.where(truth[..., None] > 0, 200, 30).astype(np.uint8).repeat(3, axis=2))
    save_mask(root / "gt.png", truth)
    src = root / "coarse"
    records = []
    for i in range(n):
        p = np.full((8, 8), 0.2, np.float32)
        p[2:6, 2:6 if i % 2 else 4] = 0.8  # odd images cover the square, even ones half of it: Jaccard 1 or 0.5
        save_probs(src / f"im{i:05d}.npz", np.stack([1 - p, p]), [0, 1])
        save_mask(src / f"im{i:05d}.png", (p > 0.5).astype(np.uint8))
        records.append(Record(f"im{i:05d}", root / "image.png", 1, root / "gt.png"))
    cfg = Config(ray=RayConfig(enabled=False))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, gt_foreground_value=1))
    return StageContext(cfg=cfg, records=tuple(records), classes=("background", "square"), run_dir=root), src


def traced_peak(ctx: StageContext, fn: Callable[[], object]) -> int:
    """Peak bytes Python allocates while `fn` runs, beyond the records (whose paths cache their text when first
    used) and the garbage of earlier code."""
    for r in ctx.records:
        str(r.image), str(r.gt)
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_scoring_memory_does_not_grow_with_the_images(tmp_path):
    peaks = {}
    for n in (100, 1000):
        ctx, src = tiny_run(tmp_path / str(n), n)
        peaks[n] = traced_peak(ctx, lambda: evaluate_stage.run(ctx, src, src))
    # Measured: when the stage kept a job and a result (with its confusion matrix) per image, the peak grew by
    # ~850 bytes per image; folded, by ~100 (the collector's garbage between two runs), whatever the task order.
    assert peaks[1000] - peaks[100] < 900 * 300, peaks


def test_evaluate_writes_every_image_score_and_their_exact_mean(tmp_path):
    ctx, src = tiny_run(tmp_path, 7)
    scores = evaluate_stage.run(ctx, src, src)
    per_image = read_per_image(src)
    assert per_image == {f"im{i:05d}": (1.0 if i % 2 else 0.5) for i in range(7)}
    assert scores["fg_jaccard"] == math.fsum(per_image.values()) / 7 == (3 * 1.0 + 4 * 0.5) / 7
    assert scores["scored"] == 7 and "per_image" not in scores
