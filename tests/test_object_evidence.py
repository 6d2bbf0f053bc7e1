"""`objects` in `coarse.evidence`: each salient object's crop classified by the ImageNet classifier (pipeline/coarse/
objects.py) - the crop geometry, hand-computed steering with per-object evidence, a real cat and a real cup told
apart, the config check, and the stage's objects pass (hand-made ISNet and CAM parts, serial vs sharded, resume)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage import data as skdata
from skimage.transform import resize

from pipeline.coarse.objects import CROP_SIDE, ObjectClassifier, crop_tensor, object_input
from pipeline.coarse.steered import steer_salient
from pipeline.config import ConfigError, load_config
from pipeline.io import load_probs, save_image
from pipeline.models.efficientnet_lite import LITE0_MEAN, LITE0_STD
from pipeline.stage import Record, StageContext
from stages import coarse as coarse_stage
from test_sharded import files, with_ray

CAT, CUP = (281, 282, 283, 284, 285), (504, 967, 968)  # ImageNet: the cats; coffee mug, espresso, cup
MAPPING = "cat: [tabby, tiger cat, Persian cat, Siamese cat, Egyptian cat]\ncup: [coffee mug, espresso, cup]\n"


def cat_and_cup() -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's cat photo beside its coffee cup photo (150 x 426), and a salient map with one object on each."""
    cat = skdata.chelsea()[::2, ::2]
    cup = (resize(skdata.coffee(), (150, 200), anti_aliasing=True) * 255).astype(np.uint8)
    salient = np.zeros((150, 426), np.float32)
    salient[10:, 20:190] = 0.9  # the cat
    salient[5:145, 250:410] = 0.8  # the cup and its saucer
    return np.concatenate([cat, cup], 1), salient


def test_steering_adds_each_objects_own_evidence():
    salient = np.zeros((6, 10), np.float32)
    salient[1:3, 1:3] = 0.5  # object A
    salient[1:4, 6:9] = 0.8  # object B
    cue = np.full((6, 10), 0.1, np.float32)
    cue[1:3, 1:3], cue[1:4, 6:9] = 0.4, 0.2  # the CAM leans to A
    objects = np.zeros((6, 10), np.float32)
    objects[1:3, 1:3], objects[1:4, 6:9] = 0.1, 0.9  # the crops say B
    # without objects: A 0.4 is the best, B 0.2 < 0.9 x 0.4 drops to sqrt(0.8 x 0.2) = 0.4
    alone = steer_salient(salient, [cue], keep=0.9)
    np.testing.assert_allclose(alone[1:3, 1:3], 0.5)
    np.testing.assert_allclose(alone[1:4, 6:9], 0.4, rtol=1e-5)
    # with them: A 0.4^0.7 x 0.1^0.3 = 0.2639, B 0.2^0.7 x 0.9^0.3 = 0.3140; A < 0.9 x 0.3140 drops to the
    # geometric mean of its three maps, (0.5 x 0.4 x 0.1)^(1/3)
    both = steer_salient(salient, [cue], keep=0.9, object_evidence=objects)
    np.testing.assert_allclose(both[1:4, 6:9], 0.8)
    np.testing.assert_allclose(both[1:3, 1:3], 0.02 ** (1 / 3), rtol=1e-5)
    np.testing.assert_allclose(both[0], alone[0])  # off the objects: the same geometric mean
    # crop weight 0: the CAM alone chooses (A), B still takes its three maps' mean (0.8 x 0.2 x 0.9)^(1/3)
    cam_only = steer_salient(salient, [cue], keep=0.9, object_evidence=objects, object_weight=0.0)
    np.testing.assert_allclose(cam_only[1:3, 1:3], 0.5)
    np.testing.assert_allclose(cam_only[1:4, 6:9], 0.144 ** (1 / 3), rtol=1e-5)
    # every object under min_evidence after the product: the evidence alone
    np.testing.assert_allclose(steer_salient(salient, [cue], min_evidence=0.5, object_evidence=objects), cue)
    with pytest.raises(ValueError, match="object evidence"):
        steer_salient(salient, [cue], object_evidence=np.ones((6, 9)))


def test_object_input_crops_a_square_around_each_object():
    image = np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    salient = np.zeros((100, 100), np.float32)
    salient[20:40, 30:40] = 0.9  # 200 px: box 20 x 10 -> square side 20 x 1.2 = 24 around (30, 35)
    salient[0:10, 95:100] = 0.6  # 50 px at the edge: side 12 around (5, 97.5), clipped to the image
    salient[90, 90] = 1.0  # 1 px < 0.002 of the photo: not classified
    columns = object_input(image, salient)
    assert columns["objects"].dtype == np.int32 and columns["objects"][90, 90] == 3
    assert columns["ids"].tolist() == [1, 2]  # numbered in raster order: the edge object is 1
    assert columns["crops"].shape == (2, 3, CROP_SIDE, CROP_SIDE)
    np.testing.assert_allclose(columns["crops"][1], crop_tensor(image[18:42, 23:47]))
    np.testing.assert_allclose(columns["crops"][0], crop_tensor(image[0:11, 91:100]))
    none = object_input(image, np.zeros((100, 100)))
    assert none["ids"].size == 0 and none["crops"].shape == (0, 3, CROP_SIDE, CROP_SIDE)
    with pytest.raises(ValueError, match="differ in size"):
        object_input(image, np.zeros((100, 90)))


def test_crop_tensor_normalises_like_the_classifier():
    grey = np.full((30, 50, 3), 51, np.uint8)  # 0.2 after /255, at any size
    expected = (0.2 - np.array(LITE0_MEAN)) / np.array(LITE0_STD)
    np.testing.assert_allclose(crop_tensor(grey)[:, 100, 100], expected, rtol=1e-5)
    assert crop_tensor(grey).shape == (3, CROP_SIDE, CROP_SIDE)


def test_classifier_tells_the_cat_from_the_cup():
    image, salient = cat_and_cup()
    inputs = object_input(image, salient)
    classify = ObjectClassifier({1: CAT, 2: CUP})
    cat = classify(**inputs, record=Record("cat", Path("photo.png"), 1))
    cup = classify(**inputs, record=Record("cup", Path("photo.png"), 2))
    assert cat[100, 100] > 0.9 and cat[100, 300] < 0.01  # the cat object is a cat, the cup object is not
    assert cup[100, 300] > 0.5 and cup[100, 100] < 0.01
    assert cat[0, 0] == cup[0, 0] == 0  # not salient: no object evidence
    assert np.all(classify(**inputs, record=Record("chair", Path("photo.png"), 3)) == 0.5)  # unmapped


@pytest.mark.parametrize("overrides", [
    ["coarse.evidence=[ddt, objects]", "coarse.cam_epochs=0", "coarse.cam_imagenet_classes=map.yaml"],  # no cam
    ["coarse.evidence=[cam, objects]"],  # no cam_imagenet_classes
])
def test_objects_need_the_cam_of_the_imagenet_classes(overrides):
    with pytest.raises(ConfigError, match="'coarse.evidence': objects .* needs cam in coarse.evidence and "
                                          "coarse.cam_imagenet_classes set"):
        load_config(overrides=["coarse.method=steered"] + overrides)
    # the same evidence for another method is not read: no error
    assert load_config(overrides=["coarse.method=isnet"] + overrides).coarse.method == "isnet"


@pytest.mark.slow
def test_stage_objects_pass_serial_sharded_and_resumed(tmp_path, ray_cluster):
    image, salient = cat_and_cup()
    save_image(tmp_path / "photo.png", image)
    (tmp_path / "map.yaml").write_text(MAPPING + "chair: []\n")  # []: no classes, in place of WordNet's chairs
    cfg = load_config(overrides=["coarse.method=steered", "coarse.evidence=[cam, objects]", "coarse.cam_epochs=0",
                                 f"coarse.cam_imagenet_classes={tmp_path / 'map.yaml'}", "ray.actors=2",
                                 "ray.images_per_call=2"])
    photo = tmp_path / "photo.png"
    records = (Record("cat", photo, 1), Record("cup", photo, 2), Record("chair", photo, 3), Record("empty", photo, 1))
    cam = np.full(salient.shape, 0.1, np.float32)
    cam[10:, 20:190], cam[5:145, 250:410] = 0.25, 0.6  # a CAM that leans to the cup, whatever the label
    outputs = {}
    for enabled in (False, True):
        dst = tmp_path / f"coarse_{enabled}"
        for record in records:  # hand-made finished parts: the stage runs neither ISNet nor the CAM
            isnet = np.zeros_like(salient) if record.stem == "empty" else salient
            coarse_stage.write_coarse(dst / "_parts" / "isnet", record.stem, record.label, isnet, cfg.coarse)
            coarse_stage.write_coarse(dst / "_parts" / "cam", record.stem, record.label, cam, cfg.coarse)
        ctx = StageContext(cfg=with_ray(cfg, enabled), records=records, classes=("background", "cat", "cup", "chair"),
                           run_dir=tmp_path)
        assert coarse_stage.run(ctx, None, dst)["images"] == 4
        outputs[enabled] = files(dst)
    assert outputs[True] == outputs[False]
    dst = tmp_path / "coarse_True"
    evidence = {r.stem: load_probs(dst / "_parts" / "objects" / f"{r.stem}.npz")[0][1] for r in records}
    assert evidence["cat"][100, 100] > 0.9 and evidence["cup"][100, 300] > 0.5
    np.testing.assert_allclose(evidence["chair"], 0.5, atol=1 / 255)
    np.testing.assert_allclose(evidence["empty"], 0)
    for record in records:
        fused = load_probs(dst / f"{record.stem}.npz")[0][1]
        isnet, cam_part = (load_probs(dst / "_parts" / name / f"{record.stem}.npz")[0][1] for name in ("isnet", "cam"))
        np.testing.assert_allclose(fused, steer_salient(isnet, [cam_part], object_evidence=evidence[record.stem]),
                                   atol=1.5 / 255)
    cat = load_probs(dst / "cat.npz")[0][1]
    assert cat[100, 100] >= 0.5 and cat[100, 300] < 0.5  # the crops name the cat and not the cup: the cat is kept,
    alone = steer_salient(salient, [cam])  # where the CAM alone, leaning to the cup, keeps the cup instead
    assert alone[100, 100] < 0.5 and alone[100, 300] >= 0.5
    # resume: a deleted objects part and pseudo-label are redone, and only they
    for name in ("_parts/objects/cup.npz", "_parts/objects/cup.png", "cup.png"):
        (dst / name).unlink()
    ctx = StageContext(cfg=with_ray(cfg, True), records=records, classes=("background", "cat", "cup", "chair"),
                       run_dir=tmp_path)
    summary = coarse_stage.run(ctx, None, dst)
    assert summary["images"] == 1 and summary["skipped"] == 3
    assert files(dst) == outputs[True]
