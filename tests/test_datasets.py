"""Each data set reader on a tiny fixture folder with exactly the real layout and file names."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.config import FullConfig
from pipeline.data.datasets import DatasetError, open_dataset
from pipeline.data.datasets.cityscapes import CLASSES as CITYSCAPES_CLASSES
from pipeline.data.datasets.cityscapes import LABEL_ID_TO_TRAIN_ID, cityscapes
from pipeline.io import save_mask
from pipeline.data.transforms import TrainTransform


def write_image(path: Path, h: int = 6, w: int = 8, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def write_grey(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8), mode="L").save(path)


def test_cityscapes_table_matches_cityscapesscripts():
    labels = pytest.importorskip("cityscapesscripts.helpers.labels").labels
    reference = {l.id: l.trainId for l in labels if l.trainId not in (255, -1) and l.id >= 0}
    assert LABEL_ID_TO_TRAIN_ID == reference
    names = [next(l.name for l in labels if l.trainId == t) for t in range(19)]
    assert list(CITYSCAPES_CLASSES) == names


def test_cityscapes_layout_label_ids_and_train_ids(tmp_path):
    for split, city, stem in [("train", "aachen", "aachen_000000_000019"), ("train", "bochum", "bochum_000000_000313"),
                              ("val", "frankfurt", "frankfurt_000000_000294")]:
        write_image(tmp_path / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
        ids = np.array([[7, 8, 26, 0, 33, 34, 1, 24]] * 6)  # road, sidewalk, car, unlabeled, bicycle, -, ego, person
        write_grey(tmp_path / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)
        write_grey(tmp_path / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png", np.full((6, 8), 13))
        write_grey(tmp_path / "gtFine" / split / city / f"{stem}_gtFine_color.png", np.zeros((6, 8)))
    train = open_dataset(FullConfig(dataset="cityscapes", root=str(tmp_path)), "train")
    assert len(train) == 2 and train.num_classes == 19
    assert train.files[0][0].name == "aachen_000000_000019_leftImg8bit.png"
    image, mask = train.load(0)
    assert image.shape == (6, 8, 3) and mask[0].tolist() == [0, 1, 13, 255, 18, 255, 255, 11]
    val = cityscapes(tmp_path, "val", labels="labelTrainIds")
    assert len(val) == 1 and (val.load(0)[1] == 13).all()


def test_bdd100k_layout(tmp_path):
    for split, n in (("train", 3), ("val", 1)):
        for i in range(n):
            stem = f"7d{i:02d}a1b2-c3d4e5f6"
            write_image(tmp_path / "images" / "10k" / split / f"{stem}.jpg")
            write_grey(tmp_path / "labels" / "sem_seg" / "masks" / split / f"{stem}.png",
                       np.array([[0, 18, 19, 255]] * 6 + [[5] * 4] * 0).repeat(2, axis=1))
    ds = open_dataset(FullConfig(dataset="bdd100k", root=str(tmp_path)), "train")
    assert len(ds) == 3 and ds.num_classes == 19
    assert ds.load(0)[1][0].tolist() == [0, 0, 18, 18, 255, 255, 255, 255]  # 19 is not a class -> ignore


def test_ade20k_layout_reduces_zero_label(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    for split, stem in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001")):
        write_image(base / "images" / split / f"{stem}.jpg", h=4, w=4)
        write_grey(base / "annotations" / split / f"{stem}.png", np.array([[0, 1, 150, 151]] * 4))
    for root in (tmp_path, base):  # either the parent or the folder itself
        ds = open_dataset(FullConfig(dataset="ade20k", root=str(root)), "validation")
        assert ds.num_classes == 150 and ds.load(0)[1][0].tolist() == [255, 0, 149, 255]


def test_camvid_segnet_layout_ignores_11(tmp_path):
    for split, n in (("train", 2), ("val", 1), ("test", 1)):
        for i in range(n):
            write_image(tmp_path / split / f"0001TP_00{i}690.png")
            write_grey(tmp_path / f"{split}annot" / f"0001TP_00{i}690.png", np.array([[0, 3, 10, 11]] * 6).repeat(2, 1))
    ds = open_dataset(FullConfig(dataset="camvid", root=str(tmp_path)), "train")
    assert len(ds) == 2 and ds.class_names[3] == "road"
    assert ds.load(1)[1][0].tolist() == [0, 0, 3, 3, 10, 10, 255, 255]
    counts = ds.class_pixel_counts()  # 2 masks x 6 rows x 2 columns per value; 11 (ignore) not counted
    assert len(counts) == 11 and counts[0] == counts[3] == counts[10] == 24 and sum(counts) == 72


def test_voc_palette_pngs_and_split_lists(tmp_path):
    ids = ["2007_000032", "2007_000039", "2008_000123"]
    for i, name in enumerate(ids):
        write_image(tmp_path / "JPEGImages" / f"{name}.jpg", h=4, w=4)
        mask = np.array([[0, 15, 255, i + 1]] * 4, np.uint8)
        save_mask(tmp_path / "SegmentationClass" / f"{name}.png", mask)  # palette PNG like VOC's
        save_mask(tmp_path / "SegmentationClassAug" / f"{name}.png", mask)
    sets = tmp_path / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000032\n2007_000039\n")
    (sets / "val.txt").write_text("2008_000123\n")
    (tmp_path / "SegmentationClassAug" / "train_aug.txt").write_text("\n".join(ids) + "\n")
    train = open_dataset(FullConfig(dataset="voc", root=str(tmp_path)), "train")
    assert len(train) == 2 and train.num_classes == 21
    assert train.load(1)[1][0].tolist() == [0, 15, 255, 2]
    assert len(open_dataset(FullConfig(dataset="voc", root=str(tmp_path)), "train_aug")) == 3
    with pytest.raises(DatasetError, match="split list not found"):
        open_dataset(FullConfig(dataset="voc", root=str(tmp_path)), "test")


def test_plain_folder_input_scale_and_transform(tmp_path):
    for stem in ("a", "b"):
        write_image(tmp_path / "train" / "images" / f"{stem}.png", h=8, w=12)
        write_grey(tmp_path / "train" / "masks" / f"{stem}.png", np.kron([[0, 1, 2], [2, 1, 9]], np.ones((4, 4))))
    cfg = FullConfig(dataset="folder", root=str(tmp_path), folder_classes=3, input_scale=0.5)
    ds = open_dataset(cfg, "train")
    image, mask = ds.load(0)
    assert image.shape == (4, 6, 3)
    assert mask.tolist() == [[0, 0, 1, 1, 2, 2]] * 2 + [[2, 2, 1, 1, 255, 255]] * 2
    full_image, full_mask = next(ds.eval_pairs())  # evaluation keeps the original size
    assert full_image.shape == (8, 12, 3) and full_mask.shape == (8, 12)
    x, y = ds.with_transform(TrainTransform((4, 4), (1.0, 1.0), False, 0.0)).get(1, np.random.default_rng(0))
    assert x.shape == (3, 4, 4) and y.shape == (4, 4)
    with pytest.raises(DatasetError, match="folder_classes"):
        open_dataset(FullConfig(dataset="folder", root=str(tmp_path)), "train")


def test_missing_folder_and_missing_mask_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match="CamVid image folder not found"):
        open_dataset(FullConfig(dataset="camvid", root=str(tmp_path)), "train")
    write_image(tmp_path / "train" / "x.png")
    (tmp_path / "trainannot").mkdir()
    with pytest.raises(DatasetError, match=r"x\.png: no mask"):
        open_dataset(FullConfig(dataset="camvid", root=str(tmp_path)), "train")
    (tmp_path / "val").mkdir()
    (tmp_path / "valannot").mkdir()
    with pytest.raises(DatasetError, match="no image/mask pairs"):
        open_dataset(FullConfig(dataset="camvid", root=str(tmp_path)), "val")
