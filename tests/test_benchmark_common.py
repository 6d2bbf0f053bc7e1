"""benchmarks/common.py: the halves and subsets the weak results are scored on, /proc memory, and the timer."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

import common  # benchmarks/common.py, on sys.path through pytest's `pythonpath` (pyproject.toml)


def test_halves_alternate_over_the_sorted_ids():
    tune, report = common.halves(["d", "a", "c", "b", "e"])
    assert (tune, report) == ({"a", "c", "e"}, {"b", "d"})


def test_subset_means_by_hand():
    per_image = {"a": 0.2, "b": 0.4, "c": None, "d": 0.8}  # halves: tune a, c; report b, d
    means = common.subset_means(per_image, large={"a", "d"})
    assert means["all"] == pytest.approx((0.2 + 0.4 + 0.8) / 3)
    assert means["tune"] == pytest.approx(0.2)  # c has no score
    assert means["report"] == pytest.approx(0.6)
    assert means["large"] == pytest.approx(0.5) and means["report large"] == pytest.approx(0.8)
    split = ({"b"}, {"a", "c"})  # given halves win over the ids' own
    assert common.subset_means(per_image, split)["report"] == pytest.approx(0.2)
    assert np.isnan(common.subset_means({"a": None})["all"])


def test_foreground_share_counts_scored_pixels_only():
    foreground = np.array([[1, 1, 0, 0]], bool)
    assert common.foreground_share(foreground) == 0.5
    assert common.foreground_share(foreground, np.array([[1, 1, 1, 0]], bool)) == pytest.approx(2 / 3)


def test_tree_rss_counts_children_and_sampler_keeps_peaks():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        while child.pid not in common.processes():
            time.sleep(0.01)
        table = common.processes()
        assert child.pid in common.descendants(table, [os.getpid()])
        assert common.tree_rss([os.getpid()], table) == table[os.getpid()].rss + table[child.pid].rss
        assert common.named(table, "time.sleep(30)") == {child.pid}
    finally:
        child.kill()
        child.wait()
    assert common.peak_rss() >= common.processes()[os.getpid()].rss > 0
    values = iter([3, 7, 5])
    with common.PeakSampler(lambda: {"x": next(values, 0)}, every_s=0.001) as sampler:
        time.sleep(0.05)
    assert sampler.peaks == {"x": 7}


def test_interleaved_times_take_turns_after_the_warmup():
    calls = []
    times = common.interleaved_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2,
                                     warmup=1, sync=lambda: calls.append("sync"))
    assert [c for c in calls if c != "sync"] == ["a", "b"] * 3 and calls.count("sync") == 12
    assert {name: len(runs) for name, runs in times.items()} == {"a": 2, "b": 2}
    assert common.median_seconds(lambda: time.sleep(0.01), repeats=3) >= 0.01


def test_require_exits_2_with_one_line(tmp_path, capsys):
    assert common.require(tmp_path, "a folder") == tmp_path
    with pytest.raises(SystemExit) as exit_:
        common.require(tmp_path / "missing", "the data folder")
    assert exit_.value.code == 2 and capsys.readouterr().err == f"{tmp_path / 'missing'}: not found (the data folder)\n"
