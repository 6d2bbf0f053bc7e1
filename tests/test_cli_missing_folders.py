"""Every command on a missing folder: exit status 2 and one line `error: <the missing path>: ...`, no traceback.

In-process through orchestrate.main (each case fails before any stage starts), plus the issue's own case as a new
user types it: `coarse2fine full --config configs/full_cityscapes.yaml` without the data, in a subprocess.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import orchestrate
from fake_run import make_run

ROOT = Path(__file__).resolve().parent.parent
BASE = str(ROOT / "configs" / "base.yaml")


def one_error_line(capsys, code: int, missing: Path | str) -> str:
    """The command's stderr, checked: exit 2, a single `error:` line that names `missing`."""
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert str(missing) in err, err
    return err


def test_run_and_evaluate_name_the_missing_data_folder(tmp_path, capsys):
    data = tmp_path / "missing"
    common = ["--config", BASE, "--set", f"data.root={data}", "--set", f"run.root={tmp_path / 'runs'}",
              "--set", "ray.enabled=false"]
    err = one_error_line(capsys, orchestrate.main(["run", *common]), data / "images")
    assert "image folder not found" in err
    err = one_error_line(capsys, orchestrate.main(["evaluate", *common, "--pred", str(tmp_path)]), data / "images")
    assert "image folder not found" in err
    pred = tmp_path / "no_predictions"
    err = one_error_line(capsys, orchestrate.main(["evaluate", *common, "--pred", str(pred)]), pred)
    assert "prediction folder not found" in err and not pred.exists()  # not created as the output folder


@pytest.mark.parametrize("config, overrides", [
    ("full_cityscapes.yaml", []), ("full_bdd100k.yaml", []), ("full_ade20k.yaml", []), ("full_camvid.yaml", []),
    ("base.yaml", ["full.dataset=voc"]), ("base.yaml", ["full.dataset=folder", "full.folder_classes=2"]),
])
def test_full_names_the_missing_data_folder(tmp_path, capsys, config, overrides):
    root = tmp_path / "missing"
    sets = [arg for item in [f"full.root={root}", f"run.root={tmp_path / 'runs'}", *overrides]
            for arg in ("--set", item)]
    err = one_error_line(capsys, orchestrate.main(["full", "--config", str(ROOT / "configs" / config), *sets]), root)
    assert "not found" in err


def test_full_without_the_data_as_a_new_user_types_it(tmp_path):
    """The README's promise for the issue's case: in a folder without data/cityscapes, one line and exit 2."""
    proc = subprocess.run([sys.executable, str(ROOT / "orchestrate.py"), "full", "--config",
                           str(ROOT / "configs" / "full_cityscapes.yaml")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "error: data/cityscapes/leftImg8bit/train: Cityscapes image folder not found"


def test_commands_on_a_run_name_the_missing_run_folder(tmp_path, capsys):
    run = tmp_path / "no_run"
    one_error_line(capsys, orchestrate.main(["status", str(run)]), run)
    one_error_line(capsys, orchestrate.main(["predict", "--run", str(run), "--images", str(tmp_path),
                                             "--out", str(tmp_path / "out")]), run)
    one_error_line(capsys, orchestrate.main(["export", "--run", str(run), "--out", str(tmp_path / "out"),
                                             "--size", "32", "32"]), run)
    one_error_line(capsys, orchestrate.main(["compare", "--config", BASE, "--set", f"run.root={tmp_path}",
                                             "--set", "run.name=no_run"]), run)


def test_commands_on_a_finished_run_name_the_missing_input_folder(tmp_path, capsys):
    run_dir, cfg = make_run(tmp_path)
    images = tmp_path / "no_images"
    err = one_error_line(capsys, orchestrate.main(["predict", "--run", str(run_dir), "--images", str(images),
                                                   "--out", str(tmp_path / "out")]), images)
    assert "image folder not found" in err
    shutil.rmtree(cfg.data.root)  # the run is there, its data set is gone
    sets = [arg for item in [f"run.root={cfg.run.root}", f"run.name={cfg.run.name}", f"data.root={cfg.data.root}",
                             "model.pretrained=none", "model.width=8", "ray.enabled=false"] for arg in ("--set", item)]
    err = one_error_line(capsys, orchestrate.main(["compare", "--config", BASE, *sets]), Path(cfg.data.root) / "images")
    assert "image folder not found" in err


def test_weights_names_the_missing_tarball_and_flops_takes_its_options(tmp_path, capsys):
    tgz = tmp_path / "missing.tgz"
    one_error_line(capsys, orchestrate.main(["weights", "isnet", "--tgz", str(tgz), "--cache", str(tmp_path / "c")]),
                   tgz)
    with pytest.raises(SystemExit) as done:  # flops takes no paths; its own options reach its parser
        orchestrate.main(["flops", "--help"])
    assert done.value.code == 0 and "--size" in capsys.readouterr().out
