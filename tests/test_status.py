"""pipeline.commands.status on a hand-built run directory: done / partial / missing, counts, scores, named errors."""
from __future__ import annotations

import shutil

import pytest

from fake_run import make_run
from pipeline.io import read_json, write_json
from pipeline.commands.status import format_status, run_status
from pipeline.commands.trained import RunError


def test_states_counts_and_scores(tmp_path):
    run_dir, cfg = make_run(tmp_path)  # 1 round, 4 images, 2 training iterations, everything done
    # a second round in progress: training finished 1 of 2 iterations, nothing else yet
    (run_dir / "round2" / "train").mkdir(parents=True)
    (run_dir / "round2" / "train" / "log.csv").write_text("iteration,loss,lr,images_per_s,val_miou,val_pixel_acc\n"
                                                          "1,0.5,1e-3,3.0,,\n")
    # round1/crf half redone: DONE gone, 2 of 4 masks left, its own scores.json not written
    (run_dir / "round1" / "crf" / "DONE").unlink()
    for stem in ("c", "d"):
        (run_dir / "round1" / "crf" / f"{stem}.png").unlink()
    write_json(run_dir / "crf" / "scores.json", {"fg_jaccard": 0.125, "miou": 0.25, "scored": 4})

    status = run_status(run_dir)
    rows = {s["name"]: s for s in status["stages"]}
    assert list(rows) == ["coarse", "crf", "round1/train", "round1/predict", "round1/crf",
                          "round2/train", "round2/predict", "round2/crf"]
    assert [rows[n]["state"] for n in rows] == ["done"] * 4 + ["partial", "partial", "missing", "missing"]
    assert (rows["coarse"]["written"], rows["coarse"]["expected"], rows["coarse"]["unit"]) == (4, 4, "images")
    assert (rows["round1/crf"]["written"], rows["round1/crf"]["expected"]) == (2, 4)
    assert (rows["round2/train"]["written"], rows["round2/train"]["expected"]) == (1, 2)
    assert rows["round1/train"]["written"] == 2 and rows["round2/crf"]["written"] == 0
    # scores: the stage's own scores.json wins, else the run's scores.json row, else none
    assert (rows["crf"]["fg_jaccard"], rows["crf"]["miou"]) == (0.125, 0.25)
    assert (rows["coarse"]["fg_jaccard"], rows["coarse"]["miou"]) == (0.3, 0.25)
    assert rows["round1/crf"]["fg_jaccard"] == 0.55  # from the run's scores.json
    assert rows["round2/predict"]["fg_jaccard"] is None and rows["round1/train"]["miou"] is None
    assert status["images"] == 4 and status["classes"] == ["background", "square", "bar"]

    text = format_status(status)
    lines = text.splitlines()
    assert lines[0].startswith(f"run fake ({run_dir}): 4 images, 2 classes, 1 rounds")
    assert any(line.startswith("round1/crf") and "partial" in line and "2 of 4 images" in line for line in lines)
    assert any(line.startswith("round2/train") and "1 of 2 iterations" in line for line in lines)
    assert any(line.startswith("crf ") and "0.1250" in line and "0.2500" in line for line in lines)
    assert lines[-1] == "4 of 8 stages done"


def test_fresh_run_lists_planned_rounds(tmp_path):
    run_dir, cfg = make_run(tmp_path)
    for name in ("coarse", "crf", "round1", "scores.json"):
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    raw = read_json(run_dir / "run.json")
    raw["config"]["rounds"]["count"] = 2
    write_json(run_dir / "run.json", raw)
    stages = run_status(run_dir)["stages"]
    assert len(stages) == 8 and {s["state"] for s in stages} == {"missing"}


def test_not_a_run(tmp_path):
    with pytest.raises(RunError, match="run directory not found"):
        run_status(tmp_path / "nothing")
    with pytest.raises(RunError, match=r"run.json: not found, so .* is not a run directory"):
        run_status(tmp_path)
    (tmp_path / "run.json").write_text("{broken")
    with pytest.raises(RunError, match=r"run.json: unusable content"):
        run_status(tmp_path)
    write_json(tmp_path / "run.json", {"config": {"train": {"iterations": "many"}}, "classes": ["bg", "x"]})
    with pytest.raises(RunError, match=r"run.json: unusable config .*train.iterations"):
        run_status(tmp_path)
