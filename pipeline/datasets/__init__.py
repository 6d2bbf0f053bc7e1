"""Fully supervised data sets in their standard layouts (see each module's docstring for the exact layout).

    pairs = open_dataset(cfg.full, split="train")   # pipeline.datasets.base.SegPairs
"""
from __future__ import annotations

from ..config import FullConfig
from .ade20k import ade20k
from .base import DatasetError, SegPairs
from .bdd100k import bdd100k
from .camvid import camvid
from .cityscapes import cityscapes
from .folder import folder
from .voc import voc


def open_dataset(cfg: FullConfig, split: str) -> SegPairs:
    """The `split` of the data set named by `full.dataset`, resized by `full.input_scale` at load time."""
    s = cfg.input_scale
    if cfg.dataset == "cityscapes":
        return cityscapes(cfg.root, split, cfg.cityscapes_labels, s)
    if cfg.dataset == "bdd100k":
        return bdd100k(cfg.root, split, s)
    if cfg.dataset == "ade20k":
        return ade20k(cfg.root, split, s)
    if cfg.dataset == "camvid":
        return camvid(cfg.root, split, s)
    if cfg.dataset == "voc":
        return voc(cfg.root, split, cfg.voc_aug, s)
    if cfg.dataset == "folder":
        return folder(cfg.root, split, cfg.folder_classes, cfg.folder_images, cfg.folder_masks, s)
    raise DatasetError(f"config key 'full.dataset': unknown data set {cfg.dataset!r}")


__all__ = ["DatasetError", "SegPairs", "open_dataset", "cityscapes", "bdd100k", "ade20k", "camvid", "voc", "folder"]
