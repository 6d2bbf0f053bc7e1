"""pipeline.commands.trained: a run's network round-trips through model.pt; missing/incomplete runs name the path."""
from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

from fake_run import CLASSES, make_run
from pipeline.models import build_model
from pipeline.commands.trained import RunError, load_checkpoint_model, load_run_model



def test_load_run_model_gives_the_saved_weights(tmp_path):
    run_dir, cfg = make_run(tmp_path)
    model, classes, loaded_cfg = load_run_model(run_dir)
    assert classes == CLASSES and loaded_cfg.model == cfg.model and not model.training
    torch.manual_seed(0)
    reference = build_model(cfg.model, len(CLASSES)).eval()  # same seed as the saved one
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x)["out"], reference(x)["out"])


def test_last_finished_round_is_chosen_and_incomplete_round_is_named(tmp_path):
    run_dir, cfg = make_run(tmp_path)
    round2 = run_dir / "round2" / "train"
    round2.mkdir(parents=True)
    torch.manual_seed(5)
    torch.save(build_model(cfg.model, len(CLASSES)).state_dict(), round2 / "model.pt")  # no DONE yet
    model, _, _ = load_run_model(run_dir)
    r1 = torch.load(run_dir / "round1" / "train" / "model.pt", weights_only=True)
    assert all(torch.equal(v, r1[k]) for k, v in model.state_dict().items())
    with pytest.raises(RunError, match=r"round2/train: round 2 training is incomplete"):
        load_run_model(run_dir, round=2)
    (round2 / "DONE").write_text("x\n")
    model2, _, _ = load_run_model(run_dir)
    assert torch.equal(model2.state_dict()["head.classify.weight"],
                       torch.load(round2 / "model.pt", weights_only=True)["head.classify.weight"])
    with pytest.raises(RunError, match="round 3 training was not started"):
        load_run_model(run_dir, round=3)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(RunError, match="run directory not found"):
        load_run_model(tmp_path / "nope")
    run_dir, cfg = make_run(tmp_path)
    (run_dir / "round1" / "train" / "model.pt").unlink()
    with pytest.raises(RunError, match=r"round1/train/model.pt: checkpoint file not found"):
        load_run_model(run_dir)
    shutil.rmtree(run_dir / "round1" / "train")
    with pytest.raises(RunError, match="no finished training round"):
        load_run_model(run_dir)
    (run_dir / "run.json").unlink()
    with pytest.raises(RunError, match=r"run.json: not found"):
        load_run_model(run_dir)


def test_checkpoint_of_another_model_and_training_checkpoints(tmp_path):
    run_dir, cfg = make_run(tmp_path)
    wide = dataclasses.replace(cfg.model, width=16)
    with pytest.raises(RunError, match=r"model.pt: weights do not fit the model config \(lite0, width 16, 3 classes\)"):
        load_checkpoint_model(run_dir / "round1" / "train" / "model.pt", wide, CLASSES)
    state = torch.load(run_dir / "round1" / "train" / "model.pt", weights_only=True)
    torch.save({"model": state, "iteration": 2}, tmp_path / "last.pt")  # engine's checkpoint layout
    model = load_checkpoint_model(tmp_path / "last.pt", cfg.model, CLASSES)
    assert torch.equal(model.state_dict()["head.classify.bias"], state["head.classify.bias"])
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match=r"bad.pt: cannot read checkpoint"):
        load_checkpoint_model(tmp_path / "bad.pt", cfg.model, CLASSES)
