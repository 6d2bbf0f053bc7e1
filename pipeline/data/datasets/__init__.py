"""Fully supervised data sets in their standard layouts (see each module's docstring for the exact layout).

    pairs = open_dataset(cfg.full, split="train")   # pipeline.data.datasets.base.SegPairs
"""
from __future__ import annotations

from pipeline.config import FullConfig
from pipeline.data.datasets.ade20k import ade20k
from pipeline.data.datasets.base import DatasetError, SegPairs
from pipeline.data.datasets.bdd100k import bdd100k
from pipeline.data.datasets.camvid import camvid
from pipeline.data.datasets.cityscapes import cityscapes
from pipeline.data.datasets.folder import folder
from pipeline.data.datasets.voc import voc


def open_dataset(cfg: FullConfig, split: str) -> SegPairs:
    """The `split` of the data set named by `full.dataset`, resized by `full.input_scale` at load time."""
    s = cfg.input_scale
    if cfg.dataset == "cityscapes":
        return cityscapes(cfg.root, split, "labelIds", s)
    if cfg.dataset == "bdd100k":
        return bdd100k(cfg.root, split, s)
    if cfg.dataset == "ade20k":
        return ade20k(cfg.root, split, s)
    if cfg.dataset == "camvid":
        return camvid(cfg.root, split, s)
    if cfg.dataset == "voc":
        return voc(cfg.root, split, split.endswith("_aug"), s)  # train_aug: the SBD-augmented masks
    if cfg.dataset == "folder":
        return folder(cfg.root, split, cfg.folder_classes, "images", "masks", s)
    raise DatasetError(f"config key 'full.dataset': unknown data set {cfg.dataset!r}")


__all__ = ["DatasetError", "SegPairs", "open_dataset", "cityscapes", "bdd100k", "ade20k", "camvid", "voc", "folder"]
