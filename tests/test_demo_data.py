"""The embedded demo set: deterministic, three classes on real textures, some images with an unlabelled object."""
from __future__ import annotations

import csv
import dataclasses
import hashlib

import numpy as np

from pipeline.config import DataConfig
from pipeline.data.demo import CLASSES, ensure_demo, generate
from pipeline.io import load_mask, read_image
from pipeline.data.weak import load_ground_truth, load_weak_dataset


def digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_demo_is_deterministic_and_well_formed(tmp_path):
    cfg = DataConfig(kind="demo", root=str(tmp_path / "a"), demo_images=20)
    a = ensure_demo(cfg)
    b = ensure_demo(dataclasses.replace(cfg, root=str(tmp_path / "b")))
    assert digest(a) == digest(b)
    generate(tmp_path / "c", 20, seed=4)
    assert digest(a) != digest(tmp_path / "c")

    ds = load_weak_dataset(cfg)
    assert ds.classes == CLASSES and len(ds.records) == 20
    rows = list(csv.DictReader((a / "labels.csv").open()))
    assert {r["label"] for r in rows} <= set(CLASSES[1:])
    two_class = 0
    for r in ds.records:
        image = read_image(r.image)
        assert 160 <= max(image.shape[:2]) <= 256 and image.dtype == np.uint8
        gt = load_ground_truth(r, cfg, len(CLASSES))
        assert gt.shape == image.shape[:2]
        present = set(np.unique(gt).tolist()) - {0}
        assert r.label in present and (gt == r.label).mean() > 0.03  # the labelled object is really there
        two_class += len(present) > 1
    assert two_class >= 1  # the multi-category case: another class in the picture, not in the label


def test_ensure_demo_reuses_a_complete_set_and_replaces_a_partial_one(tmp_path):
    cfg = DataConfig(kind="demo", root=str(tmp_path / "d"), demo_images=6)
    root = ensure_demo(cfg)
    first = digest(root)
    (root / "extra.txt").write_text("kept: a complete set is not regenerated")
    assert (ensure_demo(cfg) / "extra.txt").is_file()
    (root / ".complete").unlink()  # as if generation had been killed before the marker
    (root / "masks" / load_weak_dataset(cfg).records[0].gt.name).write_bytes(b"")
    ensure_demo(cfg)
    (root / "extra.txt").unlink(missing_ok=True)
    assert digest(root) == first and load_mask(next((root / "masks").iterdir())).size > 0
