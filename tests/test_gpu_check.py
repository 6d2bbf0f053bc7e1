"""benchmarks/gpu_check.sh: valid bash, fails fast and clearly without CUDA; its Python part runs end to end (tiny, on
the CPU, as a smoke test) so that a lent GPU's minutes are not spent on a broken script."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import gpu_check  # benchmarks/gpu_check.py, on sys.path through pytest's `pythonpath` (pyproject.toml)

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def test_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the check would run for minutes")
def test_script_fails_fast_without_cuda(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_ROOT": str(tmp_path / "scratch")}
    start = time.time()
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and time.time() - start < 60
    assert "gpu_check: no CUDA device" in proc.stderr and proc.stdout == ""
    assert not (tmp_path / "scratch").exists()  # nothing ran
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "nope.onnx")], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "nope.onnx: ISNet ONNX file not found" in proc.stderr


def test_measurements_run_end_to_end_tiny_on_cpu(tmp_path, capsys):
    argv = ["--allow-cpu", "--tiny", "--skip-demo", "--coarse-methods", "saliency,isnet", "--root", str(tmp_path),
            "--isnet", str(tmp_path / "missing.onnx")]
    assert gpu_check.main(argv) == 1  # an ISNet file that was asked for and is missing is a failed row
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("coarse2fine GPU check on CPU") and table[1].split()[:3] == ["measurement",
                                                                                           "images/s", "seconds"]
    rows = {line.split("  ")[0].strip(): line for line in table[2:]}
    assert "skipped: --skip-demo" in rows["demo run"]
    for what in ("train, bf16 + channels_last", "train, fp32, NCHW", "predict batched, bf16 + channels_last",
                 "predict stage path (1 image, flip)", "coarse saliency"):
        rate = rows[what][len(what):].split()[0]  # the images/s column
        assert float(rate) > 0, rows[what]
    assert "failed: WeightsMissingError" in rows["coarse isnet"] and "missing.onnx" in rows["coarse isnet"]
