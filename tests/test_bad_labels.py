"""Bad input matrix, the weak-label data set: labels.csv / classes.txt problems, duplicate ids, missing or unlisted
images, odd names, '..' rows, empty sets, and `on_bad_image: skip` listing every skipped row with file and reason."""
from __future__ import annotations

import numpy as np
import pytest

from bad_input_helpers import data_cfg, image, weak_set, write_png
from pipeline.io import ImageError, load_mask, load_probs, read_image, save_mask, save_probs
from pipeline.stage import pending
from pipeline.data.weak import DatasetError, load_weak_dataset


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
    assert list(pending(ds.records, dst)) == []
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


def test_zero_byte_labels_file(tmp_path):
    root = weak_set(tmp_path, {"a.png": image()}, rows=None)
    (root / "labels.csv").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"labels\.csv:1: expected the header 'image,label', got None"):
        load_weak_dataset(data_cfg(root))


def test_bad_image_in_data_set_is_named_at_load_time(tmp_path):
    root = weak_set(tmp_path, {"a.png": image(), "b.jpg": b"garbage, not an image"}, ["a.png,cat", "b.jpg,dog"])
    with pytest.raises(DatasetError, match=r"labels\.csv:3: .*b\.jpg: cannot decode image"):
        load_weak_dataset(data_cfg(root))


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
