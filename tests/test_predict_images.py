"""pipeline.commands.predict_images: masks and overlays for a folder of user images, resume, named errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pipeline.config import ModelConfig
from pipeline.io import ImageError, load_mask, palette, save_image
from pipeline.models import build_model
from pipeline.commands.predict_images import overlay, predict_folder

CLASSES = ("background", "red", "green")


class RedIsClassNet(nn.Module):
    """Class = the pixel's red value (0, 1 or 2): predictions can be planted in an image."""

    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    def forward(self, x):
        red = torch.round(x[:, 0] * 255).long().clamp(0, 2)
        return {"out": 20.0 * nn.functional.one_hot(red, 3).permute(0, 3, 1, 2).float()}


def planted(h: int, w: int, top_class: int) -> np.ndarray:
    """Top half of red value `top_class`, bottom half red 0; green/blue 200 everywhere."""
    image = np.full((h, w, 3), 200, np.uint8)
    image[:, :, 0] = 0
    image[: h // 2, :, 0] = top_class
    return image


def make_folder(root):
    save_image(root / "one.png", planted(20, 30, 1))
    save_image(root / "sub dir" / "two words.png", planted(16, 12, 2))
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir(parents=True)
    save_image(root / ".hidden" / "x.png", planted(8, 8, 1))


def test_masks_overlays_and_resume(tmp_path):
    images, out = tmp_path / "in", tmp_path / "out"
    make_folder(images)
    result = predict_folder(RedIsClassNet(), CLASSES, images, out)
    assert result["images"] == 2 and result["written"] == 2
    mask = load_mask(out / "one.png")
    expected = np.zeros((20, 30), np.uint8)
    expected[:10] = 1
    np.testing.assert_array_equal(mask, expected)
    mask2 = load_mask(out / "sub dir__two words.png")
    assert mask2.shape == (16, 12) and set(np.unique(mask2)) == {0, 2}
    with Image.open(out / "sub dir__two words_overlay.jpg") as im:
        assert im.size == (12, 16) and im.mode == "RGB"
        ov = np.asarray(im).astype(int)
    colour = np.asarray(palette()[6:9])  # class 2: (0, 128, 0)
    top = np.round(0.5 * np.array([2, 200, 200]) + 0.5 * colour)  # (1, 164, 100)
    assert np.abs(ov[2:6, 2:10] - top).max() <= 6  # JPEG: a few levels off at most
    assert np.abs(ov[10:14, 2:10] - [0, 200, 200]).max() <= 6  # background keeps the image colour
    assert sorted(p.name for p in out.iterdir()) == ["one.png", "one_overlay.jpg", "sub dir__two words.png",
                                                     "sub dir__two words_overlay.jpg"]
    again = predict_folder(RedIsClassNet(), CLASSES, images, out)
    assert again["written"] == 0 and again["images"] == 2
    (out / "one_overlay.jpg").unlink()
    assert predict_folder(RedIsClassNet(), CLASSES, images, out)["written"] == 1


def test_real_network_masks_hold_valid_ids(tmp_path):
    images, out = tmp_path / "in", tmp_path / "in" / "pred"  # output inside the input folder
    make_folder(images)
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=8, pretrained="none", backbone="lite0"), 3)
    assert predict_folder(model, CLASSES, images, out, scales=(0.75, 1.0), flip=True)["written"] == 2
    for name, size in (("one", (20, 30)), ("sub dir__two words", (16, 12))):
        mask = load_mask(out / f"{name}.png")
        assert mask.shape == size and mask.max() < len(CLASSES)
    assert predict_folder(model, CLASSES, images, out)["images"] == 2  # its own outputs are not inputs


def test_errors_name_the_file(tmp_path):
    images = tmp_path / "in"
    make_folder(images)
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageError, match=r"broken.jpg: cannot decode image"):
        predict_folder(RedIsClassNet(), CLASSES, images, tmp_path / "out")
    (images / "broken.jpg").unlink()
    save_image(images / "sub dir__two words.jpg", planted(8, 8, 1), fmt="JPEG")
    with pytest.raises(ValueError, match=r"output name 'sub dir__two words' is also that of"):
        predict_folder(RedIsClassNet(), CLASSES, images, tmp_path / "out")
    (images / "sub dir__two words.jpg").unlink()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty: no images"):
        predict_folder(RedIsClassNet(), CLASSES, tmp_path / "empty", tmp_path / "o2")
    with pytest.raises(FileNotFoundError, match="nowhere: image folder not found"):
        predict_folder(RedIsClassNet(), CLASSES, tmp_path / "nowhere", tmp_path / "o2")
    with pytest.raises(ValueError, match="predicts 3 classes but 2 class names"):
        predict_folder(RedIsClassNet(), CLASSES[:2], images, tmp_path / "o3")


def test_skip_bad_lists_unreadable_images_and_segments_the_rest(tmp_path):
    images, out = tmp_path / "in", tmp_path / "out"
    make_folder(images)
    save_image(images / "cut.png", np.random.default_rng(0).integers(0, 256, (30, 30, 3), dtype=np.uint8))
    data = (images / "cut.png").read_bytes()
    (images / "cut.png").write_bytes(data[: len(data) // 2])  # header intact, pixels cut
    (images / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match=r"cut\.png: cannot decode image"):  # default: the first bad file stops it
        predict_folder(RedIsClassNet(), CLASSES, images, out)
    result = predict_folder(RedIsClassNet(), CLASSES, images, out, skip_bad=True)
    assert result["images"] == 4 and result["written"] == 2
    listed = json.loads((out / "skipped.json").read_text())
    assert listed == result["skipped"] and [entry["file"] for entry in listed] == [str(images / "cut.png"),
                                                                                    str(images / "empty.jpg")]
    assert listed[0]["reason"].startswith("cannot decode image") and listed[1]["reason"] == "image file is empty (0 bytes)"
    again = predict_folder(RedIsClassNet(), CLASSES, images, out, skip_bad=True)  # rerun: done images stay done
    assert again["written"] == 0 and len(again["skipped"]) == 2
    save_image(images / "cut.png", planted(10, 10, 1))
    (images / "empty.jpg").unlink()
    assert predict_folder(RedIsClassNet(), CLASSES, images, out)["written"] == 1  # fixed: segmented, list emptied
    assert json.loads((out / "skipped.json").read_text()) == []


def test_overlay_blends_foreground_only():
    image = np.full((1, 2, 3), 100, np.uint8)
    mask = np.array([[0, 1]], np.uint8)  # class 1 is (128, 0, 0)
    np.testing.assert_array_equal(overlay(image, mask), [[[100, 100, 100], [114, 50, 50]]])
