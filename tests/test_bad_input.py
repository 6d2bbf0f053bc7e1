"""Bad input matrix: every case raises a named error type whose message names the file (or config key) and the reason,
or - for odd but valid inputs (grey / RGBA / 16-bit images, spaces and non-ASCII names) - works with exact values.
Crash safety of writers (full disk, killed process) is here too: a target is always the old or the complete new file."""
from __future__ import annotations

import errno
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import io as pio
from pipeline.config import ConfigError, DataConfig, load_config
from pipeline.io import (IGNORE, ImageError, atomic_write_bytes, image_size, load_mask, load_probs, read_image,
                         read_json, save_image, save_mask, save_probs, write_json)
from pipeline.stage import Record, pending
from pipeline.weak_data import DatasetError, PseudoLabelDataset, load_ground_truth, load_weak_dataset

CLASSES = ("background", "cat", "dog")


# ---------------------------------------------------------------------------------------------------------------
# helpers

def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, raw_rows: bytes | None) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB); raw_rows None = header only (no pixel data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0))
    if raw_rows is not None:
        out += chunk(b"IDAT", zlib.compress(raw_rows))
    return out + chunk(b"IEND", b"")


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return path


def image(value: int = 90, h: int = 6, w: int = 8) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def weak_set(root: Path, images: dict[str, np.ndarray | bytes], rows: list[str] | None,
             classes: tuple[str, ...] | None = CLASSES) -> Path:
    """root/images/<name> (array -> encoded by suffix, bytes -> written as is), labels.csv from rows, classes.txt."""
    for name, content in images.items():
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            Image.fromarray(content).save(path)
    (root / "images").mkdir(parents=True, exist_ok=True)
    if rows is not None:
        (root / "labels.csv").write_text("image,label\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    if classes is not None:
        (root / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    return root


def data_cfg(root: Path, **kw: object) -> DataConfig:
    return DataConfig(root=str(root), **kw)


def jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


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


def test_zero_byte_labels_file(tmp_path):
    root = weak_set(tmp_path, {"a.png": image()}, rows=None)
    (root / "labels.csv").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"labels\.csv:1: expected the header 'image,label', got None"):
        load_weak_dataset(data_cfg(root))


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


def test_bad_image_in_data_set_is_named_at_load_time(tmp_path):
    root = weak_set(tmp_path, {"a.png": image(), "b.jpg": b"garbage, not an image"}, ["a.png,cat", "b.jpg,dog"])
    with pytest.raises(DatasetError, match=r"labels\.csv:3: .*b\.jpg: cannot decode image"):
        load_weak_dataset(data_cfg(root))


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
# labels file problems

def test_label_not_in_class_list(tmp_path):
    root = weak_set(tmp_path, {"a.png": image(), "b.png": image()}, ["a.png,cat", "b.png,zebra"])
    with pytest.raises(DatasetError, match=r"labels\.csv:3: label 'zebra' is not in the class list \(cat, dog\)"):
        load_weak_dataset(data_cfg(root))
    ds = load_weak_dataset(data_cfg(root, on_bad_image="skip"))
    assert [r.stem for r in ds.records] == ["a"]
    assert len(ds.skipped) == 1 and "labels.csv:3: label 'zebra'" in ds.skipped[0]


def test_background_is_not_an_image_label(tmp_path):
    root = weak_set(tmp_path, {"a.png": image()}, ["a.png,background"])
    with pytest.raises(DatasetError, match=r"labels\.csv:2: an image label cannot be the background class"):
        load_weak_dataset(data_cfg(root))


def test_duplicate_image_ids_png_and_jpg(tmp_path):
    root = weak_set(tmp_path, {"a.png": image(), "a.jpg": image()}, ["a.png,cat", "a.jpg,dog"])
    with pytest.raises(DatasetError, match=r"labels\.csv:3: duplicate image id 'a' \(also a\.png\)"):
        load_weak_dataset(data_cfg(root, on_bad_image="skip"))  # never skipped: which label is right is unknown
    pattern = data_cfg(root, labels="", classes="", label_pattern=r"^(\w)")
    with pytest.raises(DatasetError, match=r"images/a\.png: duplicate image id 'a' \(also a\.jpg\)"):
        load_weak_dataset(pattern)


def test_duplicate_rows_and_folder_collisions(tmp_path):
    root = weak_set(tmp_path, {"a.png": image()}, ["a.png,cat", "a.png,cat"])
    with pytest.raises(DatasetError, match=r"labels\.csv:3: duplicate image id 'a'"):
        load_weak_dataset(data_cfg(root))
    root2 = weak_set(tmp_path / "2", {"s/a.png": image(), "s__a.png": image()}, ["s/a.png,cat", "s__a.png,dog"])
    with pytest.raises(DatasetError, match=r"labels\.csv:3: duplicate image id 's__a' \(also s/a\.png\)"):
        load_weak_dataset(data_cfg(root2))


def test_labels_for_missing_images(tmp_path):
    root = weak_set(tmp_path, {"a.png": image()}, ["a.png,cat", "gone.png,dog"])
    with pytest.raises(DatasetError, match=r"labels\.csv:3: .*images/gone\.png: image file not found"):
        load_weak_dataset(data_cfg(root))


def test_images_without_labels(tmp_path):
    root = weak_set(tmp_path, {"a.png": image(), "sub/extra.png": image(), ".hidden.png": b"x"}, ["a.png,cat"])
    with pytest.raises(DatasetError, match=r"images/sub/extra\.png: image has no row in .*labels\.csv"):
        load_weak_dataset(data_cfg(root))
    ds = load_weak_dataset(data_cfg(root, on_bad_image="skip"))
    assert [r.stem for r in ds.records] == ["a"]  # hidden files (.hidden.png) are ignored, not reported
    assert len(ds.skipped) == 1 and ds.skipped[0].endswith(f"image has no row in {root / 'labels.csv'}")


def test_malformed_rows_and_encodings(tmp_path):
    root = weak_set(tmp_path, {"a.png": image()}, ["a.png,cat,dog"])
    with pytest.raises(DatasetError, match=r"labels\.csv:2: expected 'image,label' \(one label per image\)"):
        load_weak_dataset(data_cfg(root, on_bad_image="skip"))
    (root / "labels.csv").write_bytes(b"image,label\na.png,c\xe4t\n")  # Latin-1, not UTF-8
    with pytest.raises(DatasetError, match=r"labels\.csv:2: not UTF-8 text \(byte 19: invalid continuation"):
        load_weak_dataset(data_cfg(root))
    (root / "labels.csv").write_bytes(b"\xef\xbb\xbfimage,label\r\n\r\na.png,cat\r\n")  # BOM, CRLF, blank line
    assert [(r.stem, r.label) for r in load_weak_dataset(data_cfg(root)).records] == [("a", 1)]
    (root / "classes.txt").write_bytes(b"background\nc\xe4t\n")
    with pytest.raises(DatasetError, match=r"classes\.txt:2: not UTF-8 text"):
        load_weak_dataset(data_cfg(root))


def test_bad_label_pattern_names_config_key(tmp_path):
    root = weak_set(tmp_path, {"cat_1.png": image()}, rows=None, classes=None)
    for pattern, reason in [("(cat", "not a valid regular expression"), ("cat", "needs a group")]:
        with pytest.raises(DatasetError, match=rf"data\.label_pattern '.*': {reason}"):
            load_weak_dataset(data_cfg(root, labels="", classes="", label_pattern=pattern))
    ds = load_weak_dataset(data_cfg(root, labels="", classes="", label_pattern=r"^(\w+?)_\d"))
    assert ds.classes == ("background", "cat") and ds.records[0].stem == "cat_1"


def test_names_with_spaces_and_non_ascii_work(tmp_path):
    names = ["my cat 01.png", "sub dir/café été.png", "日本 ñ.png"]
    root = weak_set(tmp_path, {n: image(10 * i) for i, n in enumerate(names)},
                    ["my cat 01.png,cat", '"sub dir/café été.png",dog', "日本 ñ.png,cat"])
    ds = load_weak_dataset(data_cfg(root))
    assert [(r.stem, r.label) for r in ds.records] == [("my cat 01", 1), ("sub dir__café été", 2), ("日本 ñ", 1)]
    dst = tmp_path / "run" / "coarse"
    for i, r in enumerate(ds.records):
        assert read_image(r.image)[0, 0].tolist() == [10 * i] * 3
        save_mask(dst / f"{r.stem}.png", np.full((6, 8), r.label, np.uint8))
        save_probs(dst / f"{r.stem}.npz", np.full((2, 6, 8), 0.5), [0, r.label])
    for r in ds.records:
        assert (load_mask(dst / f"{r.stem}.png") == r.label).all()
        assert load_probs(dst / f"{r.stem}.npz")[1].tolist() == [0, r.label]
    assert pending(ds.records, dst) == []
    assert sorted(p.name for p in dst.iterdir()) == sorted(f"{r.stem}.{s}" for r in ds.records for s in ("npz", "png"))


def test_dotdot_and_absolute_paths_in_labels_file_are_rejected(tmp_path):
    root = weak_set(tmp_path / "set", {"a.png": image(), "sub/b.png": image()}, None)
    write_png(tmp_path / "outside.png", image())
    for row in ["../outside.png", "sub/../a.png", "sub/../../outside.png", str(tmp_path / "outside.png")]:
        (root / "labels.csv").write_text(f"image,label\na.png,cat\n{row},dog\n", encoding="utf-8")
        with pytest.raises(DatasetError, match=r"labels\.csv:3: image path .* leaves .*images \(absolute paths, "
                                               r"'\.\.' and NUL are not allowed\)"):
            load_weak_dataset(data_cfg(root, on_bad_image="skip"))  # never skipped


def test_names_too_long_for_the_file_system(tmp_path):
    long_name = "x" * 300 + ".png"  # longer than a file name may be (255 bytes)
    nested = "/".join(["d" * 100] * 3) + "/a.png"  # each part fits, the output stem d..d__d..d__d..d__a does not
    root = weak_set(tmp_path, {"a.png": image(), nested: image()}, ["a.png,cat", f"{long_name},dog", f"{nested},cat"])
    with pytest.raises(DatasetError, match=r"labels\.csv:3: image id 'x{40}'\.\.\. is too long for output file names"):
        load_weak_dataset(data_cfg(root))
    ds = load_weak_dataset(data_cfg(root, on_bad_image="skip"))
    assert [r.stem for r in ds.records] == ["a"]
    assert "labels.csv:4: image id 'dddd" in ds.skipped[1] and "is too long for output file names" in ds.skipped[1]
    with pytest.raises(ImageError, match=r"x{300}\.png: cannot open image \(File name too long\)"):
        read_image(root / "images" / long_name)


def test_empty_data_set(tmp_path):
    root = weak_set(tmp_path, {}, rows=[])
    with pytest.raises(DatasetError, match=r": the data set holds no usable images"):
        load_weak_dataset(data_cfg(root))
    with pytest.raises(DatasetError, match=r": the data set holds no usable images"):
        load_weak_dataset(data_cfg(root, labels="", classes="", label_pattern="(.*)"))
    root2 = weak_set(tmp_path / "2", {"a.png": image()}, ["gone.png,cat"])  # everything skipped: still an error
    with pytest.raises(DatasetError, match=r"the data set holds no usable images"):
        load_weak_dataset(data_cfg(root2, on_bad_image="skip"))


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
# YAML configs

@pytest.mark.parametrize("text, message", [
    ("train:\n  itrations: 5\n", r"unknown config key 'train\.itrations' \(known here: .*iterations"),
    ("trian:\n  iterations: 5\n", r"unknown config key 'trian'"),
    ("train:\n  iterations: '5'\n", r"config key 'train\.iterations': expected int, got str '5'"),
    ("train:\n  lr: true\n", r"config key 'train\.lr': expected float, got bool True"),
    ("train:\n  crop: 192\n", r"config key 'train\.crop': expected a list, got 192"),
    ("train:\n  crop: [1, 2, 3]\n", r"config key 'train\.crop': expected 2 values, got 3"),
    ("crf:\n  iterations: 0\n", r"config key 'crf\.iterations': 0 is out of range \[1, 100\]"),
    ("coarse:\n  fg_threshold: 1.5\n", r"config key 'coarse\.fg_threshold': 1\.5 is out of range \[0\.0, 1\.0\]"),
    ("train:\n  lr: .nan\n", r"config key 'train\.lr': nan is not a finite number"),
    ("crf:\n  gauss_sxy: .inf\n", r"config key 'crf\.gauss_sxy': inf is not a finite number"),
    ("coarse:\n  method: magic\n", r"config key 'coarse\.method': 'magic' is not one of saliency, ddt"),
    ("- train\n- crf\n", r"bad\.yaml: top level must be a mapping of sections, got list"),
    ("just a string\n", r"bad\.yaml: top level must be a mapping of sections, got str"),
    ("train: 5\n", r"config key 'train': expected a mapping \(a section of keys\), got int 5"),
    ("train:\n  3: 4\n", r"config key train\.3: keys must be names \(strings\), got int"),
    ("train: {lr: 1\n", r"bad\.yaml: not valid YAML"),
    ("run:\n  name: 2024-02-30\n", r"bad\.yaml: not valid YAML: day is out of range"),
    ("base: 7\n", r"bad\.yaml: key 'base' must be a file path string"),
    ("base: nothere.yaml\n", r"nothere\.yaml: config file not found"),
])
def test_yaml_config_errors_name_file_or_key(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path / "bad.yaml")


def test_yaml_not_utf8_and_bad_overrides(tmp_path):
    (tmp_path / "bad.yaml").write_bytes(b"run:\n  name: d\xe9mo\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not UTF-8 text"):
        load_config(tmp_path / "bad.yaml")
    for items, message in [(["train.iterations"], r"override 'train\.iterations': expected KEY=VALUE"),
                           (["train.lr=[1"], r"override 'train\.lr=\[1': value is not valid YAML"),
                           (["train.lr=1", "train.lr.x=1"], r"override 'train\.lr\.x=1': 'lr' is not a section"),
                           (["train.lr.x=1"], r"config key 'train\.lr': expected float, got dict"),
                           (["train.lr=-1"], r"config key 'train\.lr': -1\.0 is out of range")]:
        with pytest.raises(ConfigError, match=message):
            load_config(None, items)
    (tmp_path / "empty_section.yaml").write_text("train:\n")  # an empty section takes overrides
    assert load_config(tmp_path / "empty_section.yaml", ["train.iterations=7"]).train.iterations == 7


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


# ---------------------------------------------------------------------------------------------------------------
# on_bad_image: skip lists every skipped row with its file and reason

def test_skip_lists_every_bad_row_with_file_and_reason(tmp_path):
    images = {"ok1.png": image(), "ok2.png": image(), "ok3.png": image(), "empty.png": b"", "junk.jpg": b"junk",
              "big.png": image(h=20, w=20), "unlisted.png": image()}
    rows = ["ok1.png,cat", "empty.png,cat", "junk.jpg,dog", "big.png,cat", "gone.png,dog", "ok3.png,zebra",
            "ok2.png,dog"]
    root = weak_set(tmp_path, images, rows)
    ds = load_weak_dataset(data_cfg(root, on_bad_image="skip", max_pixels=300))
    assert [(r.stem, r.label) for r in ds.records] == [("ok1", 1), ("ok2", 2)]
    csv_path = root / "labels.csv"
    expected = [
        (f"{csv_path}:3: ", "empty.png: image file is empty (0 bytes)"),
        (f"{csv_path}:4: ", "junk.jpg: cannot decode image"),
        (f"{csv_path}:5: ", "big.png: 20x20 is larger than data.max_pixels=300"),
        (f"{csv_path}:6: ", "gone.png: image file not found"),
        (f"{csv_path}:7: ", "label 'zebra' is not in the class list"),
        (f"{root / 'images' / 'unlisted.png'}: ", "image has no row in"),
    ]
    assert len(ds.skipped) == len(expected)
    for line, (where, reason) in zip(ds.skipped, expected):
        assert line.startswith(where) and reason in line, line


# ---------------------------------------------------------------------------------------------------------------
# full disk and killed writers

def _enospc(*_args: object, **_kw: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullDiskFile:
    """A file object whose write fails like a full disk (after the temp file was created)."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        _enospc()


WRITERS = {
    "bytes": lambda p: atomic_write_bytes(p, b"new content"),
    "json": lambda p: write_json(p, {"new": 1}),
    "mask": lambda p: save_mask(p, np.ones((4, 4), np.uint8)),
    "probs": lambda p: save_probs(p, np.full((2, 4, 4), 0.5), [0, 1]),
    "image": lambda p: save_image(p, np.zeros((4, 4, 3), np.uint8)),
}


@pytest.mark.parametrize("where", ["write", "fsync", "rename"])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_full_disk_leaves_old_target_and_no_temp_file(tmp_path, monkeypatch, writer, where):
    old = tmp_path / "out" / "existing.bin"
    old.parent.mkdir()
    old.write_bytes(b"older complete file")
    fresh = tmp_path / "out" / "fresh.bin"
    if where == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(pio.os, "fdopen", lambda fd, mode: _FullDiskFile(real_fdopen(fd, mode)))
    elif where == "fsync":
        monkeypatch.setattr(pio.os, "fsync", _enospc)
    else:
        monkeypatch.setattr(pio.os, "replace", _enospc)
    for target in (old, fresh):
        with pytest.raises(OSError, match=rf"{target.name}: cannot write \(No space left on device\)") as info:
            WRITERS[writer](target)
        assert info.value.errno == errno.ENOSPC
    assert old.read_bytes() == b"older complete file"
    assert not fresh.exists()
    assert sorted(p.name for p in old.parent.iterdir()) == ["existing.bin"]  # no temp file left behind


def test_full_disk_when_creating_the_temp_file(tmp_path, monkeypatch):
    monkeypatch.setattr(pio.tempfile, "mkstemp", _enospc)
    with pytest.raises(OSError, match=r"a\.png: cannot write \(No space left on device\)"):
        save_mask(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    assert list(tmp_path.iterdir()) == []


KILLED_WRITER = """
import sys, numpy as np
from pipeline.io import save_probs
target = sys.argv[1]
big = [np.full((3, 300, 300), v, np.float32) for v in (0.2, 0.8)]
print("ready", flush=True)
i = 0
while True:
    save_probs(target, big[i % 2], [0, 1, 2])
    i += 1
"""


def test_killed_writer_leaves_old_or_new_file(tmp_path):
    """SIGKILL a process rewriting one soft map in a loop: the target always loads and is one complete version."""
    target = tmp_path / "a.npz"
    save_probs(target, np.full((3, 300, 300), 0.2, np.float32), [0, 1, 2])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    for delay in (0.05, 0.13, 0.31):
        proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()
        proc.wait()
        probs, class_ids = load_probs(target)
        assert class_ids.tolist() == [0, 1, 2]
        assert np.unique(probs).tolist() in ([np.float32(51 / 255)], [np.float32(204 / 255)])
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "a.npz"]
    assert all(n.startswith(".a.npz.") and n.endswith(".tmp") for n in leftovers)  # a kill may leave a hidden temp
