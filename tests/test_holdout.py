"""Held-out photos (data.holdout, issue 38): the hash split, the demo's held-out folder, no held-out photo in any
training stage, the `round<k>/holdout` rows, resume, `compare` on held-out photos, and `predict`'s run settings."""
from __future__ import annotations

import dataclasses
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

import orchestrate
from pipeline.commands.predict_images import predict_folder
from pipeline.commands.report import compare_report
from pipeline.commands.status import run_status
from pipeline.commands.trained import load_run_model
from pipeline.config import ConfigError, DataConfig, load_config
from pipeline.crf import refine_probs
from pipeline.data.demo import DEMO_HOLDOUT_IMAGES, ensure_demo
from pipeline.data.holdout import held_out_by_hash, load_run_data
from pipeline.data.weak_rows import DatasetError
from pipeline.io import load_mask, read_image, read_json
from pipeline.learn.inference import predict_probs
from pipeline.orchestration import runner
from pipeline.orchestration.reference_run import run_reference
from pipeline.orchestration.runner import plan, step_hashes
from stages import WEAK_STAGES

ROOT = Path(__file__).resolve().parent.parent
TINY = ["data.demo_images=8", "model.width=16", "train.iterations=3", "train.batch_size=2", "train.crop=[64,64]",
        "train.checkpoint_every=3", "rounds.count=1", "ray.enabled=false", "test_time.scales=[0.75,1.0]",
        "test_time.flip=true", "rounds_crf.bilateral_sxy=20"]


def tiny_config(data: Path, runs: Path, *extra: str):
    return load_config(ROOT / "configs" / "demo.yaml", TINY + [f"data.root={data}", f"run.root={runs}", *extra])


def stems(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.png")}


def test_hash_split_is_stable_order_free_disjoint_and_local():
    ids = [f"img_{i:04d}" for i in range(2000)]
    held = {s for s in ids if held_out_by_hash(s, 0.3)}
    shuffled = random.Random(1).sample(ids, len(ids))
    assert {s for s in shuffled if held_out_by_hash(s, 0.3)} == held  # the order does not matter
    assert 0.25 < len(held) / len(ids) < 0.35  # about the share
    more = ids + [f"new_{i}" for i in range(500)]  # adding images moves no other
    assert {s for s in more if held_out_by_hash(s, 0.3) and s in set(ids)} == held
    assert held_out_by_hash("img_0001", 0.3) == held_out_by_hash("img_0001", 0.3)
    assert {s for s in ids if held_out_by_hash(s, 0.1)} <= held  # a smaller share holds out a subset


def test_the_key_takes_nothing_a_share_or_a_folder():
    assert load_config(overrides=["data.holdout=0.25"]).data.holdout == "0.25"  # a YAML number, kept as text
    assert load_config(overrides=["data.holdout=my_holdout"]).data.holdout == "my_holdout"
    for bad in ("1.5", "0", "1", "-0.2"):
        with pytest.raises(ConfigError, match=r"data\.holdout"):
            load_config(overrides=[f"data.holdout={bad}"])
    # unset, the key is left out of every hash (runs made before it keep theirs); set, it feeds the stages it changes
    cfg = load_config()
    assert "data.holdout" not in cfg.keys_feeding("coarse")
    held = load_config(overrides=["data.holdout=0.3"])
    for stage in ("coarse", "reference", "holdout", "compare"):
        assert held.keys_feeding(stage)["data.holdout"] == "0.3"
    assert "data.holdout" not in held.keys_feeding("train", 1) and "data.holdout" not in held.keys_feeding("crf")


def test_plan_adds_a_holdout_step_after_each_round_and_its_hash_follows_test_time():
    cfg = load_config(overrides=["data.holdout=0.3", "rounds.count=2"])
    names = [s.name for s in plan(cfg)]
    assert names[-4:] == ["round2/train", "round2/predict", "round2/crf", "round2/holdout"]
    assert "round1/holdout" in names and [s.name for s in plan(load_config())].count("round1/holdout") == 0
    step = next(s for s in plan(cfg) if s.name == "round1/holdout")
    assert (step.kind, step.src, step.on) == ("holdout", "round1/train", "holdout")
    other = load_config(overrides=["data.holdout=0.3", "rounds.count=2", "test_time.flip=false"])
    a, b = step_hashes(cfg, plan(cfg)), step_hashes(other, plan(other))
    assert a["round1/train"] == b["round1/train"] and a["round1/holdout"] != b["round1/holdout"]


def test_demo_holdout_folder_leaves_the_training_images_as_they_were(tmp_path):
    plain = ensure_demo(DataConfig(kind="demo", root=str(tmp_path / "plain"), demo_images=6))
    held = ensure_demo(DataConfig(kind="demo", root=str(tmp_path / "held"), demo_images=6, holdout="holdout"))
    assert not (plain / "holdout").exists()
    for path in sorted((plain / "images").iterdir()):
        assert (held / "images" / path.name).read_bytes() == path.read_bytes()
    names = sorted(p.name for p in (held / "holdout" / "images").iterdir())
    assert len(names) == DEMO_HOLDOUT_IMAGES and all(n.startswith("h") for n in names)
    assert (held / "holdout" / "masks").is_dir() and (held / "holdout" / "labels.csv").is_file()


def test_load_run_data_splits_by_hash_and_checks_the_folder(tmp_path):
    data = ensure_demo(DataConfig(kind="demo", root=str(tmp_path / "data"), demo_images=30))
    cfg = DataConfig(root=str(data), holdout="0.3")
    train, held = load_run_data(cfg, tmp_path / "run")
    train_stems, held_stems = {r.stem for r in train.records}, {r.stem for r in held}
    assert not train_stems & held_stems and len(train_stems | held_stems) == 30
    assert held_stems == {s for s in train_stems | held_stems if held_out_by_hash(s, 0.3)}
    assert (tmp_path / "run" / "holdout_records.sqlite").is_file()
    with pytest.raises(DatasetError, match=r"held-out folder not found \(data\.holdout='nowhere'\)"):
        load_run_data(dataclasses.replace(cfg, holdout="nowhere"), tmp_path / "run")
    shutil.copytree(data, tmp_path / "copy")  # the same ids as the training set: refused
    with pytest.raises(DatasetError, match=r"also a training image .*data\.holdout"):
        load_run_data(dataclasses.replace(cfg, holdout=str(tmp_path / "copy")), tmp_path / "run")


def recording_stages(seen: dict[str, set[str]]):
    """WEAK_STAGES whose functions note the stems of the records each step was given, by output folder."""
    def wrap(fn):
        def run(ctx, src, dst):
            seen.setdefault(Path(dst).relative_to(ctx.run_dir).as_posix(), set()).update(r.stem for r in ctx.records)
            return fn(ctx, src, dst)
        return run

    fields = {f.name: getattr(WEAK_STAGES, f.name) for f in dataclasses.fields(WEAK_STAGES)}
    return dataclasses.replace(WEAK_STAGES, **{k: wrap(v) for k, v in fields.items() if k != "evaluate"})


@pytest.fixture(scope="module")
def held_run(tmp_path_factory):
    """A 1-round tiny demo run with the demo's held-out folder: (tmp, cfg, scores, stems seen per step)."""
    tmp = tmp_path_factory.mktemp("held")
    cfg = tiny_config(tmp / "data", tmp / "runs")
    seen: dict[str, set[str]] = {}
    scores = runner.run_pipeline(cfg, recording_stages(seen))
    return tmp, cfg, scores, seen


def test_held_out_photos_enter_no_training_stage_and_are_scored(held_run):
    tmp, cfg, scores, seen = held_run
    run_dir = tmp / "runs" / "demo"
    held = {p.stem for p in (tmp / "data" / "holdout" / "images").iterdir()}
    assert len(held) == DEMO_HOLDOUT_IMAGES
    for step in ("coarse", "crf", "round1/train", "round1/predict", "round1/crf"):
        assert seen[step] and not seen[step] & held, step  # the records each stage was given
    for folder in ("coarse", "crf", "round1/predict", "round1/crf"):
        assert len(stems(run_dir / folder)) == 8 and not stems(run_dir / folder) & held
    assert seen["round1/holdout"] == held and stems(run_dir / "round1" / "holdout") == held
    row = next(r for r in scores["stages"] if r["name"] == "round1/holdout")
    assert row["images"] == row["scored"] == DEMO_HOLDOUT_IMAGES and 0.0 <= row["fg_jaccard"] <= 1.0
    assert [r["name"] for r in read_json(run_dir / "scores.json")["stages"]][-1] == "round1/holdout"
    assert read_json(run_dir / "run.json")["holdout_images"] == DEMO_HOLDOUT_IMAGES
    status = {s["name"]: s for s in run_status(run_dir)["stages"]}
    assert status["round1/holdout"]["state"] == "done" and status["round1/holdout"]["written"] == DEMO_HOLDOUT_IMAGES
    assert status["round1/holdout"]["fg_jaccard"] == row["fg_jaccard"]
    manifest = read_json(run_dir / "round1" / "holdout" / "manifest.json")
    assert manifest["config"]["test_time.scales"] == [0.75, 1.0] and manifest["config"]["data.holdout"] == "holdout"


def test_a_partial_holdout_stage_resumes_per_image_and_a_finished_one_is_reused(held_run, tmp_path):
    tmp, _, scores, _ = held_run
    shutil.copytree(tmp / "runs", tmp_path / "runs")
    cfg = tiny_config(tmp / "data", tmp_path / "runs")
    folder = tmp_path / "runs" / "demo" / "round1" / "holdout"
    before = {p.name: p.read_bytes() for p in folder.glob("*.npz")}
    (folder / "DONE").unlink()  # killed after 15 of 20 images
    removed = sorted(folder.glob("*.png"))[:5]
    for png in removed:
        png.unlink()
    kept = {p: p.stat().st_mtime_ns for p in folder.glob("*.png")}
    again = runner.run_pipeline(cfg, WEAK_STAGES)
    summary = read_json(folder / "manifest.json")["summary"]
    assert (summary["images"], summary["skipped"]) == (5, DEMO_HOLDOUT_IMAGES - 5)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items()) and all(p.is_file() for p in removed)
    assert {p.name: p.read_bytes() for p in folder.glob("*.npz")} == before  # the same maps as uninterrupted
    assert [(r["name"], r["fg_jaccard"]) for r in again["stages"]] == [(r["name"], r["fg_jaccard"])
                                                                         for r in scores["stages"]]
    finished = read_json(folder / "manifest.json")["finished"]
    stamp = (folder / "DONE").stat().st_mtime_ns
    runner.run_pipeline(cfg, WEAK_STAGES)  # finished: reused
    assert read_json(folder / "manifest.json")["finished"] == finished and (folder / "DONE").stat().st_mtime_ns == stamp


def test_compare_scores_the_networks_on_held_out_photos_beside_the_direct_pipeline(held_run, tmp_path):
    tmp, _, _, _ = held_run
    shutil.copytree(tmp / "runs", tmp_path / "runs")
    cfg = tiny_config(tmp / "data", tmp_path / "runs")
    run_dir = tmp_path / "runs" / "demo"
    seen: dict[str, set[str]] = {}
    run_reference(cfg, recording_stages(seen))
    held = {p.stem for p in (tmp / "data" / "holdout" / "images").iterdir()}
    assert seen["holdout/coarse"] == seen["holdout/crf"] == held  # the pipeline on the held-out photos only
    assert not seen["full_reference"] & held  # the reference trains on the training photos
    assert stems(run_dir / "holdout" / "coarse") == stems(run_dir / "holdout" / "crf") == held
    metrics = read_json(run_dir / "compare" / "holdout_metrics.json")
    pipeline = read_json(run_dir / "holdout" / "crf" / "scores.json")
    assert metrics["images"] == DEMO_HOLDOUT_IMAGES and metrics["pipeline"]["fg_jaccard"] == pipeline["fg_jaccard"]
    for name in ("weak", "full"):
        assert metrics[name]["images"] == DEMO_HOLDOUT_IMAGES and 0.0 <= metrics[name]["fg_jaccard"] <= 1.0
    weak_train = read_json(run_dir / "compare" / "weak_metrics.json")
    assert weak_train["images"] == 8 and metrics["weak"]["fg_jaccard"] != weak_train["fg_jaccard"]
    page = compare_report(run_dir).read_text()
    assert "<h2>Held-out photos</h2>" in page and "pipeline on the photos (coarse -&gt; crf, no network)" in page
    assert f"<td>{metrics['full']['fg_jaccard']:.4f}</td>" in page
    stamp = (run_dir / "compare" / "holdout_metrics.json").stat().st_mtime_ns
    run_reference(cfg, WEAK_STAGES)  # every step finished: reused
    assert (run_dir / "compare" / "holdout_metrics.json").stat().st_mtime_ns == stamp


def test_predict_defaults_to_the_runs_test_time_settings_and_crf_is_the_rounds(held_run, tmp_path):
    tmp, cfg, _, _ = held_run
    run_dir = tmp / "runs" / "demo"
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted((tmp / "data" / "holdout" / "images").iterdir())[:2]:
        shutil.copy(path, photos / path.name)
    model, classes, run_cfg = load_run_model(run_dir)

    def cli(out: str, *flags: str) -> dict[str, np.ndarray]:
        assert orchestrate.main(["predict", "--run", str(run_dir), "--images", str(photos), "--out",
                                 str(tmp_path / out), "--device", "cpu", *flags]) == 0
        return {p.stem: load_mask(p) for p in (tmp_path / out).glob("*.png")}

    def direct(out: str, scales, flip) -> dict[str, np.ndarray]:
        predict_folder(model, classes, photos, tmp_path / out, scales=scales, flip=flip)
        return {p.stem: load_mask(p) for p in (tmp_path / out).glob("*.png")}

    def same(a: dict, b: dict) -> bool:
        return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    run_settings = direct("run_settings", (0.75, 1.0), True)
    plain = direct("plain", (1.0,), False)
    assert not same(run_settings, plain)  # the two settings are told apart on these photos
    assert same(cli("defaults"), run_settings)
    assert same(cli("flags", "--scales", "1", "--no-flip"), plain)
    refined = cli("crf", "--crf")
    rounds_crf = run_cfg.crf_for_round(1)
    assert rounds_crf.bilateral_sxy == 20.0 and rounds_crf != run_cfg.crf  # the rounds' kernel, not the coarse CRF
    for path in sorted(photos.iterdir()):
        image = read_image(path)
        probs = predict_probs(model, image, scales=(0.75, 1.0), flip=True)
        expected = np.argmax(refine_probs(image, probs, rounds_crf), axis=0).astype(np.uint8)
        assert np.array_equal(refined[path.stem], expected)
    assert not same(refined, run_settings)


def test_evaluate_scores_a_holdout_folder_on_the_held_out_photos(held_run, tmp_path):
    tmp, _, scores, _ = held_run
    run_dir = tmp / "runs" / "demo"
    sets = [item for extra in (TINY, [f"data.root={tmp / 'data'}"]) for s in extra for item in ("--set", s)]
    for stage in ("round1/holdout", "crf"):
        out = tmp_path / stage.replace("/", "_")
        assert orchestrate.main(["evaluate", "--config", str(ROOT / "configs" / "demo.yaml"), *sets, "--pred",
                                 str(run_dir / stage), "--out", str(out), "--serial"]) == 0
        row = next(r for r in scores["stages"] if r["name"] == stage)
        assert read_json(out / "scores.json")["scored"] == row["scored"]
        assert read_json(out / "scores.json")["fg_jaccard"] == row["fg_jaccard"]
