"""Bad input matrix, files: unreadable, odd-format, too large or missing images, masks and soft maps, and masks that
do not fit their image or the class list. Every case raises a named error type whose message names the file and the
reason, or - for odd but valid images (grey / RGBA / palette / 16-bit) - is read as RGB uint8 with exact values.
Labels files: test_bad_labels.py; configs: test_bad_config.py; full disk and killed writers: test_crash_safety.py."""
from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bad_input_helpers import data_cfg, image, jpeg_bytes, png_bytes, weak_set, write_png
from pipeline.config import ConfigError, load_config
from pipeline.io import IGNORE, ImageError, image_size, load_mask, load_probs, read_image, read_json, save_mask, save_probs
from pipeline.stage import Record
from pipeline.data import image_check
from pipeline.data.weak import DatasetError, PseudoLabelDataset, load_ground_truth, load_weak_dataset


# ---------------------------------------------------------------------------------------------------------------
# unreadable image files

def test_corrupt_jpeg_names_file(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not JPEG data at all" * 4)
    with pytest.raises(ImageError, match=r"broken\.jpg: cannot decode image"):
        read_image(path)


def test_truncated_jpeg_names_file(tmp_path):
    data = jpeg_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"half\.jpg: cannot decode image \(.*truncated"):
        read_image(path)


def test_truncated_png_names_file(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buf, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert image_size(path) == (40, 40)  # the header is intact ...
    with pytest.raises(ImageError, match=r"cut\.png: cannot decode image"):  # ... the pixels are not
        read_image(path)
    with pytest.raises(ImageError, match=r"cut\.png: cannot read mask"):
        load_mask(path)


def test_zero_byte_files_name_file(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: image file is empty \(0 bytes\)"):
        read_image(empty)
    with pytest.raises(ImageError, match=r"empty\.png: cannot read mask"):
        load_mask(empty)
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.npz: cannot read soft map"):
        load_probs(tmp_path / "empty.npz")
    (tmp_path / "empty.json").write_bytes(b"")
    with pytest.raises(json.JSONDecodeError, match=r"empty\.json: not valid JSON"):
        read_json(tmp_path / "empty.json")


def test_damaged_soft_map_and_json_name_file(tmp_path):
    save_probs(tmp_path / "a.npz", np.full((2, 3, 3), 0.5), [0, 1])
    data = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "a.npz").write_bytes(data[:40])
    with pytest.raises(ImageError, match=r"a\.npz: cannot read soft map"):
        load_probs(tmp_path / "a.npz")
    (tmp_path / "m.json").write_text('{"stage": "crf", ')
    with pytest.raises(json.JSONDecodeError, match=r"m\.json: not valid JSON"):
        read_json(tmp_path / "m.json")
    (tmp_path / "b.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(json.JSONDecodeError, match=r"b\.json: not UTF-8"):
        read_json(tmp_path / "b.json")


def test_undecodable_pixels_in_data_set_are_found_at_load_time(tmp_path):
    """A JPEG cut in half passes the header check but not decoding: the loader decodes every image, so the row stops
    the load (default) or is skipped (skip) before any stage runs. A PNG named .jpg reads (Pillow goes by content)."""
    data, png = jpeg_bytes(), io.BytesIO()
    Image.fromarray(image()).save(png, format="PNG")
    files = {"a.png": image(), "half.jpg": data[: len(data) // 2], "png.jpg": png.getvalue(), "text.jpg": b"hello"}
    root = weak_set(tmp_path, files, ["a.png,cat", "half.jpg,dog", "png.jpg,cat", "text.jpg,dog"])
    assert image_size(root / "images" / "half.jpg") == (64, 64)  # the header alone passes
    with pytest.raises(DatasetError, match=r"labels\.csv:3: .*half\.jpg: cannot decode image \(.*truncated"):
        load_weak_dataset(data_cfg(root))
    ds = load_weak_dataset(data_cfg(root, on_bad_image="skip"))
    assert [r.stem for r in ds.records] == ["a", "png"]
    assert len(ds.skipped) == 2
    assert "labels.csv:3: " in ds.skipped[0] and "half.jpg: cannot decode image (image file is truncated" in ds.skipped[0]
    assert "labels.csv:5: " in ds.skipped[1] and "text.jpg: cannot decode image" in ds.skipped[1]


def test_decode_check_cache_decodes_only_new_or_changed_images(tmp_path, monkeypatch):
    root = weak_set(tmp_path / "set", {"a.png": image(), "b.png": image(20)}, ["a.png,cat", "b.png,dog"])
    cache, decoded, real = tmp_path / "checked.sqlite", [], image_check.read_image
    monkeypatch.setattr(image_check, "read_image", lambda path, m: decoded.append(path.name) or real(path, m))
    load_weak_dataset(data_cfg(root), checked=cache)
    assert sorted(decoded) == ["a.png", "b.png"] and cache.is_file()
    decoded.clear()
    load_weak_dataset(data_cfg(root), checked=cache)
    assert decoded == []  # unchanged files are not decoded again
    write_png(root / "images" / "b.png", np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    load_weak_dataset(data_cfg(root), checked=cache)
    assert decoded == ["b.png"]  # a changed file is
    decoded.clear()
    good = (root / "images" / "b.png").read_bytes()
    (root / "images" / "b.png").write_bytes(good[: len(good) // 2])
    ds = load_weak_dataset(data_cfg(root, on_bad_image="skip"), checked=cache)
    assert decoded == ["b.png"] and len(ds.skipped) == 1 and "b.png: cannot decode image" in ds.skipped[0]
    assert cached_paths(cache) == [str(root.absolute() / "images" / "a.png")]
    with pytest.raises(DatasetError, match=r"a\.png: 8x6 is larger than data\.max_pixels=10"):
        load_weak_dataset(data_cfg(root, max_pixels=10), checked=cache)  # header checks run even when cached
    cache.write_text("{")  # a damaged cache (here: not SQLite at all) is ignored and rewritten
    decoded.clear()
    assert len(load_weak_dataset(data_cfg(root, on_bad_image="skip"), checked=cache).records) == 1
    assert sorted(decoded) == ["a.png", "b.png"] and cached_paths(cache) == [str(root.absolute() / "images" / "a.png")]


def cached_paths(cache: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(cache)) as db:
        return [row[0] for row in db.execute("SELECT path FROM images ORDER BY path")]


# ---------------------------------------------------------------------------------------------------------------
# odd but valid images: read as RGB uint8 with exact values

def test_grayscale_is_read_as_rgb(tmp_path):
    grey = np.array([[0, 10, 200], [255, 7, 128]], np.uint8)
    out = read_image(write_png(tmp_path / "grey.png", grey, "L"))
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    for c in range(3):
        assert out[..., c].tolist() == grey.tolist()


def test_rgba_drops_alpha(tmp_path):
    rgba = np.array([[[10, 20, 30, 0], [200, 100, 50, 255]]], np.uint8)
    out = read_image(write_png(tmp_path / "rgba.png", rgba, "RGBA"))
    assert out.shape == (1, 2, 3) and out.tolist() == [[[10, 20, 30], [200, 100, 50]]]


def test_palette_and_one_bit_images_are_rgb(tmp_path):
    pal = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 250, 120, 5] + [0] * 762)
    pal.save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png").tolist() == [[[0, 0, 0], [250, 120, 5]]]
    Image.fromarray(np.array([[True, False]])).save(tmp_path / "bit.png")
    assert read_image(tmp_path / "bit.png").tolist() == [[[255, 255, 255], [0, 0, 0]]]
    assert load_mask(tmp_path / "bit.png").tolist() == [[1, 0]]  # a 1-bit mask reads as class ids 0/1


def test_16bit_grey_maps_linearly_to_8bit(tmp_path):
    grey16 = np.array([[0, 257 * 100, 65535, 1000]], np.uint16)
    out = read_image(write_png(tmp_path / "g16.png", grey16))
    # v / 257 rounded, the same mapping for every image (1000 / 257 = 3.89 -> 4), not stretched per image
    assert out.dtype == np.uint8 and out[..., 0].tolist() == [[0, 100, 255, 4]]
    assert (out[..., 0] == out[..., 2]).all()


def test_16bit_rgb_png_is_read_as_8bit_rgb(tmp_path):
    row = b"\x00" + struct.pack(">HHHHHH", 0x1234, 0xABCD, 0xFFFF, 0, 257 * 7, 65535)  # filter byte + 2 pixels
    path = tmp_path / "rgb16.png"
    path.write_bytes(png_bytes(2, 1, 16, 2, row))
    out = read_image(path)
    assert out.dtype == np.uint8 and out.tolist() == [[[0x12, 0xAB, 0xFF], [0, 7, 255]]]


def test_16bit_mask_with_class_ids_reads_and_large_values_fail(tmp_path):
    ok = write_png(tmp_path / "m16.png", np.array([[0, 2, 255]], np.uint16))
    assert load_mask(ok).tolist() == [[0, 2, 255]]
    bad = write_png(tmp_path / "m16big.png", np.array([[0, 300]], np.uint16))
    with pytest.raises(ImageError, match=r"m16big\.png: mask values up to 300 do not fit"):
        load_mask(bad)


# ---------------------------------------------------------------------------------------------------------------
# masks that do not fit their image or the class list

def test_pseudo_label_of_other_size_names_both_files(tmp_path):
    img = write_png(tmp_path / "images" / "a.png", image(h=6, w=8))
    save_mask(tmp_path / "crf" / "a.png", np.zeros((6, 7), np.uint8))
    ds = PseudoLabelDataset([Record("a", img, 1)], tmp_path / "crf", transform=None, max_pixels=10**6)
    with pytest.raises(DatasetError, match=r"crf/a\.png: mask \(6, 7\) does not match image .*a\.png \(6, 8\)"):
        ds.load(0)


def test_pseudo_label_values_outside_class_range(tmp_path):
    img = write_png(tmp_path / "images" / "a.png", image(h=2, w=3))
    save_mask(tmp_path / "crf" / "a.png", np.array([[0, 1, 2], [IGNORE, 5, 7]], np.uint8))
    ds = PseudoLabelDataset([Record("a", img, 1)], tmp_path / "crf", None, 10**6, num_classes=3)
    with pytest.raises(DatasetError, match=r"crf/a\.png: mask values \[5, 7\] are not class ids 0\.\.2"):
        ds.load(0)
    save_mask(tmp_path / "crf" / "a.png", np.array([[0, 1, 2], [IGNORE, 2, 0]], np.uint8))
    assert ds.load(0)[1].tolist() == [[0, 1, 2], [IGNORE, 2, 0]]  # 255 = ignore is always allowed


def test_ground_truth_of_other_size_names_file(tmp_path):
    img = write_png(tmp_path / "images" / "a.png", image(h=6, w=8))
    gt = tmp_path / "masks" / "a.png"
    save_mask(gt, np.zeros((8, 6), np.uint8))  # transposed
    with pytest.raises(DatasetError, match=r"masks/a\.png: ground truth \(8, 6\) does not match image .*\(6, 8\)"):
        load_ground_truth(Record("a", img, 1, gt), data_cfg(tmp_path))


def test_ground_truth_values_outside_class_range(tmp_path):
    img = write_png(tmp_path / "images" / "a.png", image(h=1, w=4))
    gt = tmp_path / "masks" / "a.png"
    save_mask(gt, np.array([[0, 2, 9, 255]], np.uint8))
    record = Record("a", img, 2, gt)
    with pytest.raises(DatasetError, match=r"masks/a\.png: mask values \[9\] are not class ids 0\.\.2 "
                                           r"\(nor data\.gt_ignore_values \[255\]\)"):
        load_ground_truth(record, data_cfg(tmp_path), num_classes=3)
    assert load_ground_truth(record, data_cfg(tmp_path, gt_ignore_values=(9, 255)), num_classes=3).tolist() == \
        [[0, 2, 255, 255]]
    # foreground-value ground truth (GrabCut: 0 / 128 / 255) holds no class ids, so it is not range-checked
    save_mask(gt, np.array([[0, 128, 255, 128]], np.uint8))
    cfg = data_cfg(tmp_path, gt_foreground_value=255, gt_ignore_values=(128,))
    assert load_ground_truth(record, cfg, num_classes=3).tolist() == [[0, 255, 2, 255]]


# ---------------------------------------------------------------------------------------------------------------
# missing directories and files

def test_missing_directories_and_files(tmp_path):
    with pytest.raises(DatasetError, match=r"nope/images: image folder not found \(data\.root='.*nope'"):
        load_weak_dataset(data_cfg(tmp_path / "nope"))
    root = weak_set(tmp_path, {"a.png": image()}, rows=None, classes=None)
    with pytest.raises(DatasetError, match=r"labels\.csv: labels file not found"):
        load_weak_dataset(data_cfg(root))
    (root / "labels.csv").write_text("image,label\na.png,cat\n")
    with pytest.raises(DatasetError, match=r"classes\.txt: class list not found \(set data\.classes: ''"):
        load_weak_dataset(data_cfg(root))
    ds = load_weak_dataset(data_cfg(root, classes=""))  # no masks/ folder: no ground truth, not an error
    assert ds.classes == ("background", "cat") and ds.records[0].gt is None
    with pytest.raises(ImageError, match=r"gone\.png: image file not found"):
        read_image(tmp_path / "gone.png")
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")


# ---------------------------------------------------------------------------------------------------------------
# too large

def test_image_larger_than_max_pixels(tmp_path):
    path = write_png(tmp_path / "big.png", image(h=10, w=20))
    with pytest.raises(ImageError, match=r"big\.png: 20x10 is larger than data\.max_pixels=199"):
        read_image(path, max_pixels=199)
    assert read_image(path, max_pixels=200).shape == (10, 20, 3)
    bomb = tmp_path / "bomb.png"  # header claims 30000 x 30000 (900 M pixels): refused before any decoding
    bomb.write_bytes(png_bytes(30000, 30000, 8, 0, None))
    with pytest.raises(ImageError, match=r"bomb\.png: (30000x30000 is larger than|too many pixels for) data\.max_pixels"):
        read_image(bomb)
    with pytest.raises(ImageError, match=r"bomb\.png: cannot read mask"):
        load_mask(bomb)
    root = weak_set(tmp_path / "set", {"a.png": image(), "big.png": image(h=10, w=20)}, ["a.png,cat", "big.png,dog"])
    with pytest.raises(DatasetError, match=r"labels\.csv:3: .*big\.png: 20x10 is larger than data\.max_pixels=100"):
        load_weak_dataset(data_cfg(root, max_pixels=100))
