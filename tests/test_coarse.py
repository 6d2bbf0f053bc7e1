"""Coarse stage: saliency on a known pasted object, probability -> mask thresholds, the stage's file contract,
resuming, determinism (Ray vs serial), fusion, salient steering, the method table and the config checks of the
method lists."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata
from skimage.draw import disk
from skimage.transform import resize

from pipeline.coarse.saliency import saliency_foreground
from pipeline.config import ConfigError, load_config
from pipeline.io import IGNORE, load_mask, load_probs, save_image
from pipeline.metrics import foreground_jaccard
from pipeline.stage import Record, StageContext
from stages import coarse as coarse_stage


def textured_scene(seed: int, h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A grass-texture background with an orange disc at a seeded position; returns (image, disc mask)."""
    rng = np.random.default_rng(seed)
    grass = resize(skdata.grass()[:200, :260], (h, w), anti_aliasing=True)
    image = np.stack([0.2 + 0.4 * grass, 0.35 + 0.5 * grass, 0.15 + 0.3 * grass], -1)
    mask = np.zeros((h, w), bool)
    r = int(rng.integers(18, 26))
    cy, cx = int(rng.integers(r + 4, h - r - 4)), int(rng.integers(r + 4, w - r - 4))
    mask[disk((cy, cx), r, shape=mask.shape)] = True
    image[mask] = (0.95, 0.55, 0.1)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8), mask


def test_saliency_finds_pasted_disc():
    for seed in range(3):
        image, disc = textured_scene(seed)
        prob = saliency_foreground(image, segments=120)
        assert prob.shape == disc.shape and prob.dtype == np.float32
        assert foreground_jaccard(prob >= 0.5, disc) > 0.8
        assert prob[disc].mean() > 0.7 and prob[~disc].mean() < 0.3


def test_saliency_rejects_grey_input():
    with pytest.raises(ValueError, match="RGB uint8"):
        saliency_foreground(np.zeros((32, 32), np.uint8))


def test_thresholds_and_ignore_band(tmp_path):
    cfg = load_config(overrides=["coarse.fg_threshold=0.6", "coarse.bg_threshold=0.3"]).coarse
    p = np.array([[0.05, 0.29, 0.31, 0.45, 0.59, 0.61, 0.95]], np.float32)
    mask = coarse_stage.write_coarse(tmp_path, "row", 3, p, cfg)
    # below bg_threshold -> background 0; between -> ignore 255; at/above fg_threshold -> the image's label 3
    assert mask.tolist() == [[0, 0, IGNORE, IGNORE, IGNORE, 3, 3]]
    assert load_mask(tmp_path / "row.png").tolist() == mask.tolist()
    probs, class_ids = load_probs(tmp_path / "row.npz")
    assert class_ids.tolist() == [0, 3]
    np.testing.assert_allclose(probs[1], p, atol=1 / 255)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1 / 255)
    # equal thresholds leave no ignore band
    tight = load_config(overrides=["coarse.fg_threshold=0.5", "coarse.bg_threshold=0.5"]).coarse
    assert coarse_stage.write_coarse(tmp_path, "tight", 1, p, tight).tolist() == [[0, 0, 0, 0, 1, 1, 1]]
    bad = load_config(overrides=["coarse.fg_threshold=0.3", "coarse.bg_threshold=0.6"]).coarse
    with pytest.raises(ValueError, match="bg_threshold"):
        coarse_stage.write_coarse(tmp_path, "bad", 1, p, bad)


def make_context(tmp_path: Path, overrides: list[str], n: int = 4) -> tuple[StageContext, list[np.ndarray]]:
    records, discs = [], []
    for i in range(n):
        image, disc = textured_scene(10 + i)
        path = tmp_path / "images" / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(path, image)
        records.append(Record(stem=f"img{i}", image=path, label=1 + i % 2))
        discs.append(disc)
    cfg = load_config(overrides=list(overrides))
    ctx = StageContext(cfg=cfg, records=tuple(records), classes=("background", "a", "b"), run_dir=tmp_path)
    return ctx, discs


def test_stage_saliency_ray_resume_and_determinism(tmp_path, ray_cluster):
    ctx, discs = make_context(tmp_path, ["coarse.method=saliency"])
    summary = coarse_stage.run(ctx, None, tmp_path / "coarse")
    assert summary["images"] == 4 and summary["skipped"] == 0
    for record, disc in zip(ctx.records, discs):
        mask = load_mask(tmp_path / "coarse" / f"{record.stem}.png")
        assert mask.shape == disc.shape
        assert set(np.unique(mask).tolist()) <= {0, record.label, IGNORE}
        confident = mask != IGNORE
        assert foreground_jaccard(mask == record.label, disc, valid=confident) > 0.8
    # resume: finished images are skipped; a deleted .png is redone
    (tmp_path / "coarse" / "img2.png").unlink()
    summary = coarse_stage.run(ctx, None, tmp_path / "coarse")
    assert summary["images"] == 1 and summary["skipped"] == 3
    # serial run gives identical files
    serial_ctx, _ = make_context(tmp_path, ["coarse.method=saliency", "ray.enabled=false"])
    coarse_stage.run(serial_ctx, None, tmp_path / "serial")
    for record in ctx.records:
        for ext in ("png", "npz"):
            a = load_mask if ext == "png" else (lambda p: load_probs(p)[0])
            np.testing.assert_array_equal(a(tmp_path / "coarse" / f"{record.stem}.{ext}"),
                                          a(tmp_path / "serial" / f"{record.stem}.{ext}"))


def test_stage_fusion_of_identical_parts_is_that_part(tmp_path):
    ctx, _ = make_context(tmp_path, ["coarse.method=fusion", "coarse.fusion=[saliency, saliency]", "ray.enabled=false"],
                          n=2)
    coarse_stage.run(ctx, None, tmp_path / "fused")
    for record in ctx.records:
        fused, ids = load_probs(tmp_path / "fused" / f"{record.stem}.npz")
        part, _ = load_probs(tmp_path / "fused" / "_parts" / "saliency" / f"{record.stem}.npz")
        assert ids.tolist() == [0, record.label]
        # geometric mean of a map with itself is the map (up to the 1e-3 floor and uint8 rounding)
        np.testing.assert_allclose(fused[1], np.maximum(part[1], 1e-3), atol=1.5 / 255)


def test_stage_rejects_bad_label(tmp_path):
    ctx, _ = make_context(tmp_path, ["ray.enabled=false"], n=1)
    bad = StageContext(cfg=ctx.cfg, records=(Record("x", ctx.records[0].image, 7),), classes=ctx.classes,
                       run_dir=tmp_path)
    with pytest.raises(ValueError, match="label 7"):
        coarse_stage.run(bad, None, tmp_path / "bad")


def test_geometric_mean_hand_computed():
    from pipeline.coarse.fusion import geometric_mean

    a = np.array([[0.81, 0.0, 1.0]])
    b = np.array([[0.25, 1.0, 1.0]])
    # sqrt(0.81 * 0.25) = 0.45; a hard 0 is floored at 1e-3: sqrt(1e-3 * 1) = 0.0316
    np.testing.assert_allclose(geometric_mean([a, b]), [[0.45, 0.001**0.5, 1.0]], rtol=1e-5)
    with pytest.raises(ValueError, match="shape"):
        geometric_mean([a, np.ones((2, 2))])


def test_steer_salient_keeps_the_object_the_label_points_at():
    from pipeline.coarse.fusion import geometric_mean
    from pipeline.coarse.steered import steer_salient

    salient = np.zeros((6, 10), np.float32)
    salient[1:3, 1:3] = 0.9  # object A (4 px)
    salient[1:4, 6:9] = 0.8  # object B (9 px)
    evidence = np.full((6, 10), 0.2, np.float32)
    evidence[1:3, 1:3] = 0.7  # the label's evidence lies on A
    out = steer_salient(salient, [evidence], keep=0.5, min_evidence=0.5)
    np.testing.assert_allclose(out[1:3, 1:3], 0.9)  # A kept as salient
    np.testing.assert_allclose(out[1:4, 6:9], np.sqrt(0.8 * 0.2), rtol=1e-5)  # B: geometric mean, now background
    np.testing.assert_allclose(out[5], np.sqrt(np.float32(1e-3) * 0.2), rtol=1e-4)  # floored 0 x 0.2
    assert (out >= 0.5).sum() == 4
    evidence[1:4, 6:9] = 0.5  # B's evidence 0.5 >= 0.5 x 0.7: both kept
    assert (steer_salient(salient, [evidence], keep=0.5, min_evidence=0.5) >= 0.5).sum() == 13
    weak = np.full((6, 10), 0.3, np.float32)  # no object reaches min_evidence: the evidence alone
    np.testing.assert_allclose(steer_salient(salient, [weak], min_evidence=0.5), weak)
    np.testing.assert_allclose(steer_salient(np.zeros((6, 10)), [weak]), weak)  # nothing salient: the evidence
    two = steer_salient(salient, [evidence, evidence])  # several evidence maps: their geometric mean
    np.testing.assert_allclose(two, steer_salient(salient, [geometric_mean([evidence, evidence])]), rtol=1e-6)


def test_stage_steered_steers_the_salient_part(tmp_path):
    from pipeline.coarse.steered import steer_salient

    ctx, _ = make_context(tmp_path, ["coarse.method=steered", "coarse.evidence=[saliency]", "ray.enabled=false"], n=2)
    parts = tmp_path / "fused" / "_parts"
    rng = np.random.default_rng(0)
    for record in ctx.records:  # hand-made finished parts: the stage fuses them without running either method
        h, w = load_image_shape(record.image)
        for name in ("isnet", "saliency"):
            coarse_stage.write_coarse(parts / name, record.stem, record.label, rng.random((h, w)), ctx.cfg.coarse)
    coarse_stage.run(ctx, None, tmp_path / "fused")
    for record in ctx.records:
        fused = load_probs(tmp_path / "fused" / f"{record.stem}.npz")[0][1]
        salient, evidence = (load_probs(parts / name / f"{record.stem}.npz")[0][1] for name in ("isnet", "saliency"))
        np.testing.assert_allclose(fused, steer_salient(salient, [evidence]), atol=1.5 / 255)


def load_image_shape(path: Path) -> tuple[int, int]:
    from pipeline.io import read_image

    return read_image(path).shape[:2]


@pytest.mark.parametrize("overrides, message", [
    (["coarse.method=fusion", "coarse.fusion=[isnet, cam]"],
     r"'coarse.fusion'.*coarse.method: steered with coarse.evidence: \[cam\]"),
    (["coarse.fusion=[isnet, ddt, saliency]"], r"coarse.evidence: \[ddt, saliency\]"),  # whatever the method
    (["coarse.classify_objects=true"], r"'coarse.classify_objects'.*coarse.evidence: \[cam, objects\]"),
    (["coarse.classify_objects=false"], "'coarse.classify_objects'"),
    (["coarse.method=fusion", "coarse.fusion=[]"], "'coarse.fusion'.*non-empty list of saliency, ddt, cam"),
    (["coarse.method=fusion", "coarse.fusion=[ddt, steered]"], "'coarse.fusion'"),
    (["coarse.method=steered", "coarse.evidence=[cam, isnet]"], "'coarse.evidence'"),
    (["coarse.method=steered", "coarse.evidence=[]"], "'coarse.evidence'.*at least one besides objects"),
    (["coarse.method=steered", "coarse.evidence=[objects]"], "'coarse.evidence'.*at least one besides objects"),
])
def test_method_lists_are_checked_and_old_keys_name_the_new_ones(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(overrides=overrides)
    assert "\n" not in str(err.value)  # one line


def test_lists_of_other_methods_are_not_checked():
    cfg = load_config(overrides=["coarse.method=saliency", "coarse.fusion=[ddt, steered]", "coarse.evidence=[]"])
    assert cfg.coarse.fusion == ("ddt", "steered") and cfg.coarse.evidence == ()


def test_every_method_in_the_table_is_a_config_choice_or_a_part():
    import dataclasses

    from pipeline.config import EVIDENCE, FUSED, CoarseConfig

    method = next(f for f in dataclasses.fields(CoarseConfig) if f.name == "method")
    assert set(coarse_stage.METHODS) == set(method.metadata["choices"]) | {"objects"}
    assert set(FUSED) | set(EVIDENCE) <= set(coarse_stage.METHODS)


def test_a_method_cannot_be_its_own_part(tmp_path):
    import dataclasses

    ctx, _ = make_context(tmp_path, ["coarse.method=fusion", "ray.enabled=false"], n=1)
    looped = dataclasses.replace(ctx.cfg, coarse=dataclasses.replace(ctx.cfg.coarse, fusion=("saliency", "fusion")))
    with pytest.raises(ValueError, match="fusion -> fusion"):  # built past load_config, which refuses it
        coarse_stage.run(dataclasses.replace(ctx, cfg=looped), None, tmp_path / "looped")
