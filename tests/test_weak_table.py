"""benchmarks/weak_table.py: the paired comparison of a run's stages on the same images."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def test_weak_table_paired_gain_by_hand(tmp_path):
    script = Path(__file__).parents[1] / "benchmarks" / "weak_table.py"
    spec = importlib.util.spec_from_file_location("weak_table", script)
    weak_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(weak_table)
    for name, per_image in (("crf", {"a": 0.5, "b": 0.2, "c": 0.4, "d": None}),
                            ("round1/crf", {"a": 0.6, "b": 0.2, "c": 0.7, "d": 0.9})):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "per_image.csv").write_text("stem,fg_jaccard\n" + "".join(
            f"{stem},{'' if v is None else v}\n" for stem, v in per_image.items()))
    gain, se, better, worse = weak_table.paired_gain(tmp_path, "crf", "round1/crf")
    # gains 0.1, 0.0, 0.3 ("d" has no score before): mean 0.4 / 3, sample std 0.15275, / sqrt(3)
    assert gain == pytest.approx(0.4 / 3) and se == pytest.approx(0.152753 / 3 ** 0.5, rel=1e-4)
    assert (better, worse) == (2, 0)
