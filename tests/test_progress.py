"""Progress lines: the ETA of training comes from the engine's log (rate and time of the last row)."""
from __future__ import annotations

import os
import time

import pytest

from pipeline.orchestration.parallel import eta
from stages.train import training_progress


def test_eta_at_the_rate_so_far():
    assert eta(10.0, 5, 20) == "30s"  # 2 s per item, 15 left
    assert eta(3.0, 0, 20) == "?"


def test_training_eta_from_logged_rate_minus_time_since_the_row(tmp_path):
    assert training_progress(tmp_path, 300, 8, 3.0) == "train: starting, 300 iterations, 3s"
    log = tmp_path / "log.csv"
    log.write_text("iteration,loss,lr,images_per_s,val_miou,val_pixel_acc\n25,0.75895,9.2e-04,8.00,,\n")
    line = training_progress(tmp_path, 300, 8, 30.0)
    assert line.startswith("train: iteration 25/300, loss 0.7590, 30s, ETA ")
    assert int(line.rsplit(" ", 1)[1].rstrip("s")) == pytest.approx(275, abs=2)  # 275 iterations x 8 / 8 img/s
    now = time.time()
    os.utime(log, (now - 100, now - 100))  # the row was written 100 s ago: 175 s left
    assert int(training_progress(tmp_path, 300, 8, 130.0).rsplit(" ", 1)[1].rstrip("s")) == pytest.approx(175, abs=2)
