"""The whole weak pipeline on a tiny demo, on the session's shared Ray cluster: outputs, scores, skipping, resuming.

One run (module fixture) is made once; the other tests copy it and check what a rerun does to the copy.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import stages.coarse
import stages.crf
import stages.evaluate
import stages.predict
import stages.train
from pipeline.config import Config, ConfigError, load_config
from pipeline.io import load_mask, load_probs, read_json
from pipeline.metrics import read_per_image
from pipeline.orchestration import runner
from pipeline.orchestration.runner import StageFunctions, plan, stage_keys, step_hashes
from stages.train import round_train_config

ROOT = Path(__file__).resolve().parent.parent
TINY = ["data.demo_images=8", "data.holdout=''", "model.width=16",  # no held-out photos: tests/test_holdout.py
        "train.iterations=4", "train.batch_size=2", "train.crop=[64,64]",
        "train.checkpoint_every=2", "rounds.count=2", "test_time.flip=false", "ray.num_cpus=2"]
STAGE_MODULES = (stages.coarse, stages.crf, stages.train, stages.predict)


def run_pipeline(cfg: Config, **kwargs) -> dict:
    """The runner with the stage modules' `run` as they are now (so a test can monkeypatch one)."""
    stage_functions = StageFunctions(coarse=stages.coarse.run, crf=stages.crf.run, train=stages.train.run,
                                     predict=stages.predict.run, evaluate=stages.evaluate.run)
    return runner.run_pipeline(cfg, stage_functions, **kwargs)


def tiny_config(data: Path, runs: Path, *extra: str):
    return load_config(ROOT / "configs" / "demo.yaml", TINY + [f"data.root={data}", f"run.root={runs}", *extra])


def outputs(run_dir: Path) -> dict[str, bytes]:
    """Every per-image output of a run (palette PNGs and soft maps), by relative path."""
    return {p.relative_to(run_dir).as_posix(): p.read_bytes()
            for p in sorted(run_dir.rglob("*")) if p.suffix in (".png", ".npz") and "_parts" not in p.parts}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, ray_cluster):
    tmp = tmp_path_factory.mktemp("tiny")
    cfg = tiny_config(tmp / "data", tmp / "runs")
    scores = run_pipeline(cfg)
    return tmp, cfg, scores


def copy_run(tiny_run, tmp_path: Path, *extra: str):
    tmp, _, _ = tiny_run
    shutil.copytree(tmp / "runs", tmp_path / "runs")
    return tiny_config(tmp / "data", tmp_path / "runs", *extra), tmp_path / "runs" / "demo"


def forbid_stage_runs(monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("a finished stage was run again")
    for module in STAGE_MODULES:
        monkeypatch.setattr(module, "run", boom)


def test_end_to_end_tiny_demo(tiny_run):
    tmp, cfg, scores = tiny_run
    run_dir = tmp / "runs" / "demo"
    names = [row["name"] for row in scores["stages"]]
    assert names == ["coarse", "crf", "round1/predict", "round1/crf", "round2/predict", "round2/crf"]
    for step in plan(cfg):
        assert (run_dir / step.name / "DONE").is_file(), step.name
        assert read_json(run_dir / step.name / "manifest.json")["stage"] == step.name
    assert (run_dir / "round2" / "train" / "model.pt").is_file()
    assert read_json(run_dir / "scores.json") == scores
    records = read_json(run_dir / "run.json")
    assert records["classes"] == ["background", "disc", "triangle", "cross"] and records["images"] == 8
    for row in scores["stages"]:
        assert row["scored"] == 8 and 0.0 <= row["miou"] <= 1.0 and 0.0 <= row["fg_jaccard"] <= 1.0
        per_image = read_per_image(run_dir / row["dir"])
        assert len(per_image) == 8 and sum(per_image.values()) / 8 == pytest.approx(row["fg_jaccard"], abs=1e-12)
    crf = scores["stages"][1]
    assert crf["fg_jaccard"] > scores["stages"][0]["fg_jaccard"]  # the CRF improves the saliency masks
    for png in (run_dir / "round2" / "crf").glob("*.png"):
        values = set(np.unique(load_mask(png)).tolist())
        assert values <= {0, 1, 2, 3, 255}
        probs, ids = load_probs(png.with_suffix(".npz"))
        assert probs.shape[1:] == load_mask(png).shape and 0 in ids


def test_rerun_skips_every_finished_stage(tiny_run, tmp_path, monkeypatch):
    cfg, run_dir = copy_run(tiny_run, tmp_path)
    before = outputs(run_dir)
    forbid_stage_runs(monkeypatch)
    scores = run_pipeline(cfg)
    assert outputs(run_dir) == before
    assert [r["miou"] for r in scores["stages"]] == [r["miou"] for r in tiny_run[2]["stages"]]


def test_killed_run_resumes_to_identical_outputs(tiny_run, tmp_path):
    cfg, run_dir = copy_run(tiny_run, tmp_path)
    before = outputs(run_dir)
    # As if killed inside round 2's CRF (half its images written, no DONE) and during round 2's training
    # (a checkpoint at iteration 2 but no final weights): round 1 stays, the rest is completed.
    crf_dir = run_dir / "round2" / "crf"
    (crf_dir / "DONE").unlink()
    for png in sorted(crf_dir.glob("*.png"))[:4]:
        png.unlink()
        png.with_suffix(".npz").unlink()
    train_dir = run_dir / "round2" / "train"
    weights = torch.load(train_dir / "model.pt", weights_only=True)
    (train_dir / "DONE").unlink()
    (train_dir / "model.pt").unlink()
    run_pipeline(cfg)
    resumed = torch.load(train_dir / "model.pt", weights_only=True)
    assert all(torch.equal(weights[k], resumed[k]) for k in weights)  # resumed from last.pt to the same weights
    assert outputs(run_dir) == before


def test_changed_crf_setting_redoes_crf_and_everything_after(tiny_run, tmp_path):
    cfg, run_dir = copy_run(tiny_run, tmp_path, "crf.bilateral_sxy=20", "rounds.count=1")
    coarse_before = (run_dir / "coarse" / "manifest.json").read_bytes()
    crf_before = read_json(run_dir / "crf" / "manifest.json")["hash"]
    scores = run_pipeline(cfg)
    assert (run_dir / "coarse" / "manifest.json").read_bytes() == coarse_before  # untouched
    assert read_json(run_dir / "crf" / "manifest.json")["hash"] != crf_before
    assert [r["name"] for r in scores["stages"]] == ["coarse", "crf", "round1/predict", "round1/crf"]


def test_from_stage_recomputes_the_same_outputs(tiny_run, tmp_path):
    cfg, run_dir = copy_run(tiny_run, tmp_path)
    before = outputs(run_dir)
    stamp = (run_dir / "round1" / "crf" / "manifest.json").stat().st_mtime_ns
    run_pipeline(cfg, start_from="round2")
    assert (run_dir / "round1" / "crf" / "manifest.json").stat().st_mtime_ns == stamp  # before round 2: kept
    assert outputs(run_dir) == before  # fixed seeds: the redone rounds are byte-identical
    with pytest.raises(ConfigError, match="no such stage"):
        run_pipeline(cfg, start_from="round7")


def test_rounds_stop_when_labels_stop_changing(tiny_run, tmp_path, monkeypatch):
    cfg, run_dir = copy_run(tiny_run, tmp_path, "rounds.min_change=1.0", "rounds.count=3")
    scores = run_pipeline(cfg)
    # every change is below 100 %: the run stops after round 1 and never trains rounds 2 or 3
    assert [r["name"] for r in scores["stages"]][-1] == "round1/crf"
    assert not (run_dir / "round3").exists()


def test_foreground_network_switch_redoes_training():
    on, off = load_config(overrides=["rounds.foreground_network=true"]), Config()
    h_on, h_off = step_hashes(on, plan(on)), step_hashes(off, plan(off))
    assert h_on["crf"] == h_off["crf"] and h_on["round1/train"] != h_off["round1/train"]


def test_output_neutral_training_keys_keep_the_hashes():
    plain, changed = Config(), load_config(overrides=["train.log_every=3", "train.checkpoint_every=7",
                                                      "ray.num_cpus=1", "data.masks=elsewhere"])
    assert step_hashes(plain, plan(plain)) == step_hashes(changed, plan(changed))
    lr = load_config(overrides=["train.lr=0.5"])
    h_plain, h_lr = step_hashes(plain, plan(plain)), step_hashes(lr, plan(lr))
    assert h_plain["crf"] == h_lr["crf"] and h_plain["round1/train"] != h_lr["round1/train"]


def test_round_ensemble_keeps_round1():
    plain, ensembled = (load_config(overrides=["rounds.count=2", *extra]) for extra in ([], ["rounds.ensemble=true"]))
    assert plan(plain)[-2].name == "round2/predict"
    assert stage_keys(ensembled, plan(ensembled)[-2])["rounds.ensemble"] is True
    assert "rounds.ensemble" not in stage_keys(ensembled, plan(ensembled)[3])  # round1/predict
    h_plain, h_ens = step_hashes(plain, plan(plain)), step_hashes(ensembled, plan(ensembled))
    assert h_plain["round1/crf"] == h_ens["round1/crf"]  # round 1 has nothing to average with
    assert h_plain["round2/train"] == h_ens["round2/train"] and h_plain["round2/predict"] != h_ens["round2/predict"]


def test_lr_decay_keeps_round1_and_lowers_later_rounds_lr():
    decayed, plain = load_config(overrides=["rounds.lr_decay=0.5", "rounds.count=3"]), load_config(
        overrides=["rounds.count=3"])
    h_dec, h_plain = step_hashes(decayed, plan(decayed)), step_hashes(plain, plan(plain))
    assert h_dec["round1/crf"] == h_plain["round1/crf"]  # round 1 trains at train.lr either way
    assert h_dec["round2/train"] != h_plain["round2/train"]
    lr = decayed.train.lr
    assert [round_train_config(decayed, k).lr for k in (1, 2, 3)] == pytest.approx([lr, lr / 2, lr / 4])
    assert round_train_config(decayed, 3).iterations == decayed.train.iterations  # only the lr changes
    assert round_train_config(plain, 3).lr == plain.train.lr


def test_rounds_crf_kernel_changes_only_the_rounds_crf(tiny_run, tmp_path, monkeypatch):
    cfg, run_dir = copy_run(tiny_run, tmp_path, "rounds_crf.bilateral_sxy=20", "rounds_crf.bilateral_compat=3",
                            "rounds.count=1")
    kept = {name: (run_dir / name / "manifest.json").read_bytes() for name in ("crf", "round1/train", "round1/predict")}
    seen = []
    original = stages.crf.run

    def recording_run(ctx, src, dst):
        seen.append((Path(dst).relative_to(run_dir).as_posix(), ctx.cfg.crf))
        return original(ctx, src, dst)

    monkeypatch.setattr(stages.crf, "run", recording_run)
    run_pipeline(cfg)
    assert {name: (run_dir / name / "manifest.json").read_bytes() for name in kept} == kept  # not redone
    assert [(name, c.bilateral_sxy, c.bilateral_compat) for name, c in seen] == [("round1/crf", 20.0, 3.0)]
    crf_keys = read_json(run_dir / "round1" / "crf" / "manifest.json")["config"]
    assert (crf_keys["crf.bilateral_sxy"], crf_keys["crf.bilateral_compat"], crf_keys["crf.iterations"]) == \
        (20.0, 3.0, cfg.crf.iterations)
    assert read_json(run_dir / "crf" / "manifest.json")["config"]["crf.bilateral_sxy"] == cfg.crf.bilateral_sxy
