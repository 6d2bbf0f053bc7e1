"""Class evidence from the ImageNet classifier: a label's ImageNet classes (configs/imagenet_classes/), their CAM
(hand-computed weights, a real photo through the stage), and the single-object rule for class-agnostic salient maps."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data as skdata
from torch import nn

from pipeline.coarse.cam import CAM_DECISION, cam_probability, label_cam
from pipeline.coarse.imagenet_classes import imagenet_categories, load_label_classes
from pipeline.coarse.salient import largest_object
from pipeline.config import ConfigError, load_config
from pipeline.io import load_mask, load_probs, save_image
from pipeline.metrics import foreground_jaccard
from pipeline.stage import Record, StageContext
from stages import coarse as coarse_stage

CAT_CLASSES = "cat: [tabby, tiger cat, Persian cat, Siamese cat, Egyptian cat]\n"


def test_imagenet_categories_are_the_thousand_in_index_order():
    names = imagenet_categories()
    assert len(names) == 1000 == len(set(names))
    assert names[0] == "tench" and names[151] == "Chihuahua" and names[281] == "tabby"


def test_mapping_takes_names_indices_and_ranges(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text(CAT_CLASSES + "dog: [[151, 153], 151, 7]\n")
    labels = ("background", "cat", "dog", "person")  # person is not listed: no evidence
    assert load_label_classes(path, labels) == {1: (281, 282, 283, 284, 285), 2: (7, 151, 152, 153)}
    assert load_label_classes(path, ("background", "dog")) == {1: (7, 151, 152, 153)}  # cat absent: skipped


@pytest.mark.parametrize("text, message", [
    ("horse: [sorrel]\n", "names none of the data set's 2 labels"),
    ("horse: [kitten]\n", "label 'horse': 'kitten' is not an ImageNet class name"),  # checked though absent
    ("cat: [kitten]\n", "'kitten' is not an ImageNet class name"),
    ("cat: [1000]\n", "index 1000 is outside 0..999"),
    ("cat: [[5, 2]]\n", r"\[5, 2\] is not an ImageNet class name, index or \[first, last\] range"),
    ("cat: [true]\n", "True is not an ImageNet class name"),
    ("cat: tabby\n", "expected a list of ImageNet classes"),
    ("- cat\n", "expected a mapping of label names"),
    ("cat: [tabby\n", "not a readable YAML mapping"),
])
def test_mapping_errors_name_the_file_and_entry(tmp_path, text, message):
    path = tmp_path / "map.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_label_classes(path, ("background", "cat", "dog"))
    assert str(path) in str(err.value)


def test_missing_mapping_names_the_config_key(tmp_path):
    with pytest.raises(ValueError, match="coarse.cam_imagenet_classes"):
        load_label_classes(tmp_path / "none.yaml", ("background", "cat"))


def test_shipped_coco_mapping_loads():
    labels = ("background", "airplane", "dog", "person", "sports ball", "tv")
    mapping = load_label_classes("configs/imagenet_classes/coco.yaml", labels + ("zebra",))
    assert mapping[3] == () and len(mapping[2]) == 118 and len(mapping[4]) == 9 and mapping[6] == (340,)


@torch.no_grad()
def test_label_cam_weights_classes_by_their_probability():
    fc = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))
    head = torch.tensor([[[2.0, 0.0]], [[0.0, 2.0]]])  # 2 channels, 1 x 2 pixels; pooled features (1, 1)
    # logits (1, 1, 10): classes 0 and 1 equally likely -> weight (0.5, 0.5) -> CAM [1, 1] / 1
    np.testing.assert_allclose(label_cam(head, fc, (0, 1)).numpy(), [[1.0, 1.0]])
    head = torch.tensor([[[4.0, 0.0]], [[0.0, 2.0]]])  # pooled (2, 1): logits 2 vs 1
    p0 = 1 / (1 + np.exp(-1.0))  # softmax over the two classes only
    expected = np.array([4 * p0, 2 * (1 - p0)])
    np.testing.assert_allclose(label_cam(head, fc, (0, 1)).numpy()[0], expected / expected.max(), rtol=1e-6)


@torch.no_grad()
def test_label_without_classes_is_no_evidence():
    cam = label_cam(torch.rand(4, 3, 5), nn.Linear(4, 10), ())
    assert torch.all(cam == CAM_DECISION)
    np.testing.assert_allclose(cam_probability(cam.numpy(), (30, 50)), 0.5)


@pytest.mark.slow
def test_stage_cam_with_a_mapping_localises_the_named_class(tmp_path, capsys):
    """`coarse.method: cam` with `cam_imagenet_classes`: the cat photo labelled `cat` gets the cat classes' CAM, the
    same photo labelled with a class neither the file nor WordNet maps gets p = 0.5 everywhere (all ignored), and
    the stage says so in one line."""
    save_image(tmp_path / "chelsea.png", skdata.chelsea())
    (tmp_path / "map.yaml").write_text(CAT_CLASSES)
    cfg = load_config(overrides=["coarse.method=cam", "coarse.cam_epochs=0", "coarse.image_side=224",
                                 f"coarse.cam_imagenet_classes={tmp_path / 'map.yaml'}", "ray.enabled=false"])
    records = (Record("cat", tmp_path / "chelsea.png", 1), Record("other", tmp_path / "chelsea.png", 2))
    ctx = StageContext(cfg=cfg, records=records, classes=("background", "cat", "flibbertigibbet"), run_dir=tmp_path)
    assert coarse_stage.run(ctx, None, tmp_path / "coarse")["images"] == 2
    warnings = [line for line in capsys.readouterr().err.splitlines() if "no ImageNet class" in line]
    assert len(warnings) == 1 and warnings[0].endswith("0.5 everywhere: flibbertigibbet")
    prob = load_probs(tmp_path / "coarse" / "cat.npz")[0][1]
    box = np.zeros(prob.shape, bool)
    box[20:, 40:380] = True  # hand-drawn box around the cat's head and chest
    assert foreground_jaccard(prob >= 0.5, box) > 0.5
    assert (prob[80:, 400:] >= 0.5).mean() < 0.2  # the blurred room on the right is not the cat
    other = load_probs(tmp_path / "coarse" / "other.npz")[0][1]
    np.testing.assert_allclose(other, 0.5, atol=1 / 255)
    assert np.all(load_mask(tmp_path / "coarse" / "other.png") == 255)


def test_largest_object_turns_the_others_to_background():
    prob = np.full((6, 8), 0.1, np.float32)
    prob[0:3, 0:3] = 0.9  # 9 pixels: the largest object stays
    prob[4:6, 6:8] = 0.7  # 4 pixels: becomes 1 - 0.7
    prob[0, 7] = 0.5  # 1 pixel at exactly 0.5 is an object too
    out = largest_object(prob)
    expected = prob.copy()
    expected[4:6, 6:8] = 0.3
    expected[0, 7] = 0.5  # 1 - 0.5
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    one = np.where(np.arange(8) < 4, 0.8, 0.2).astype(np.float32)[None].repeat(3, 0)
    np.testing.assert_array_equal(largest_object(one), one)  # a single object: unchanged


def test_mapping_needs_the_imagenet_classifier(tmp_path):
    with pytest.raises(ConfigError, match="coarse.cam_imagenet_classes.*cam_epochs: 0"):
        load_config(overrides=["coarse.cam_imagenet_classes=map.yaml", "coarse.cam_epochs=5"])


def test_editing_the_mapping_changes_the_coarse_hash(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text(CAT_CLASSES)
    cfg = load_config(overrides=[f"coarse.cam_imagenet_classes={path}", "coarse.cam_epochs=0"])
    before = cfg.keys_feeding("coarse")["coarse.cam_imagenet_classes"]
    path.write_text("cat: [tabby]\n")
    after = cfg.keys_feeding("coarse")["coarse.cam_imagenet_classes"]
    assert before != after and str(path) in after
    assert load_config().keys_feeding("coarse")["coarse.cam_imagenet_classes"] == ""  # unset: the value itself


def test_bad_mapping_stops_the_stage_before_any_method_runs(tmp_path):
    save_image(tmp_path / "chelsea.png", skdata.chelsea()[::4, ::4])
    (tmp_path / "map.yaml").write_text("cat: [kitten]\n")
    cfg = load_config(overrides=["coarse.method=fusion", "coarse.fusion=[saliency, cam]", "coarse.cam_epochs=0",
                                 f"coarse.cam_imagenet_classes={tmp_path / 'map.yaml'}", "ray.enabled=false"])
    ctx = StageContext(cfg=cfg, records=(Record("cat", tmp_path / "chelsea.png", 1),), classes=("background", "cat"),
                       run_dir=tmp_path)
    with pytest.raises(ConfigError, match="map.yaml: label 'cat': 'kitten' is not an ImageNet class name"):
        coarse_stage.run(ctx, None, tmp_path / "coarse")
    assert not (tmp_path / "coarse" / "_parts").exists()  # the saliency part did not run first
