"""benchmarks/weak_table.py and split_scores.py: a run's stages compared on the same images, and on its halves."""
from __future__ import annotations

import sys

import pytest
from fake_run import make_run

import split_scores  # benchmarks/*.py, on sys.path through pytest's `pythonpath` (pyproject.toml)
import weak_table


def test_weak_table_paired_gain_by_hand(tmp_path):
    for name, per_image in (("crf", {"a": 0.5, "b": 0.2, "c": 0.4, "d": None}),
                            ("round1/crf", {"a": 0.6, "b": 0.2, "c": 0.7, "d": 0.9})):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "per_image.csv").write_text("stem,fg_jaccard\n" + "".join(
            f"{stem},{'' if v is None else v}\n" for stem, v in per_image.items()))
    gain, se, better, worse = weak_table.paired_gain(tmp_path, "crf", "round1/crf")
    # gains 0.1, 0.0, 0.3 ("d" has no score before): mean 0.4 / 3, sample std 0.15275, / sqrt(3)
    assert gain == pytest.approx(0.4 / 3) and se == pytest.approx(0.152753 / 3 ** 0.5, rel=1e-4)
    assert (better, worse) == (2, 0)


def test_split_scores_and_weak_table_on_a_hand_built_run(tmp_path, monkeypatch, capsys):
    run_dir, _ = make_run(tmp_path)  # round1/crf per image: a 0.9, b 0.2, c 0.6, d 0.4; tune a, c; report b, d
    monkeypatch.setattr(sys, "argv", ["split_scores.py", str(run_dir), "--gt", str(tmp_path / "data" / "masks"),
                                      "--fg", "1"])
    assert split_scores.main() == 0
    out = capsys.readouterr().out
    assert "fake: 4 images, tune 2, report 2, report large 0" in out  # fg 1: a and c, both in the tuning half
    assert out.splitlines()[-1].split() == ["round1/crf", "0.5250", "0.7500", "0.3000", "nan"]
    monkeypatch.setattr(sys, "argv", ["weak_table.py", str(run_dir)])
    assert weak_table.main() == 0
    out = capsys.readouterr().out
    assert "| round1/crf | 0.550 (0.500) |" in out and "monotone" in out
    assert "round1/crf - crf: +0.1250" in out  # per-image gains 0.5, -0.2, 0.2, 0.0 over crf's 0.4
