"""The one shape of every coarse method: what stages/coarse.py needs to run it, as functions that return arrays.

    method = ddt.method(setting)    # each method module has `method(setting: MethodSetting) -> Method`
    method.parts                    # other methods whose maps it reads, each written first into dst/_parts/<name>/
    method.group_work               # device tasks needing a whole group of images, before any image (or None)
    method.network                  # per image: prepare (CPU) -> network (device) -> finish (CPU) ...
    method.per_image                # ... or per image on a CPU: the probability from the image or the parts

A method module never runs these itself and imports nothing from pipeline/orchestration: the stage hands them to the
executor, so every function here must be picklable (module-level functions, partials of them, classes that a
device holder builds once). Everything returns arrays; the stage writes the files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pipeline.config import CoarseConfig
from pipeline.stage import Record

Inputs = dict[str, np.ndarray]  # one image's network inputs by keyword, e.g. {"x": backbone input [3, h, w]}
Parts = Mapping[str, np.ndarray]  # one image's part maps by method name: foreground probability [H, W] each


@dataclass(frozen=True)
class MethodSetting:
    """What a method is described from: the config and the records (made by the stage, in the driver)."""

    coarse: CoarseConfig
    records: Sequence[Record]  # every record of the run: group work needs whole groups
    todo: Sequence[Record]  # the records still pending in `dst`
    dst: Path  # the method's output folder; its per-group caches go below it (dst/_ddt, dst/_cam)
    num_classes: int  # the data set's classes, background included
    max_pixels: int  # data.max_pixels: refuse larger images
    seed: int  # run.seed
    label_classes: Mapping[int, tuple[int, ...]] | None  # each label's ImageNet classes; None without a mapping


@dataclass(frozen=True)
class GroupWork:
    """Device work that needs a whole group of images, run before any image is mapped. Its results go to files
    below the method's `dst` (caches), which the network pass then reads, so a resumed run skips what is there."""

    task: Callable[[Any], Any]  # called once per item
    items: Sequence[Any]  # e.g. DDT: the label groups still needing statistics; CAM: the one training set
    desc: str  # progress line
    # True: each task holds a whole device (a GPU, else all CPUs of the largest node), for training;
    # False: each task holds what one inference actor holds, so several groups run side by side
    whole_device: bool = False


@dataclass(frozen=True)
class NetworkPass:
    """An image's map from a network, in three steps that the stage shards over the cluster's devices."""

    prepare: Callable[[np.ndarray, Parts], Inputs]  # CPU: (decoded RGB image, its parts) -> the network's inputs
    # built once per device holder; then network(record=..., **inputs) -> a score map (one image per forward pass)
    network: Callable[[], Callable[..., np.ndarray]]
    finish: Callable[[np.ndarray, tuple[int, int]], np.ndarray]  # CPU: (score map, image (H, W)) -> probability


@dataclass(frozen=True)
class Method:
    """One coarse method: exactly one of `network` and `per_image` says how an image's probability is made."""

    parts: tuple[str, ...] = ()  # methods whose maps this one reads (in this order), computed first
    group_work: GroupWork | None = None  # before any image
    network: NetworkPass | None = None  # per image, on a device
    # per image, on a CPU: (decoded image, or None unless `reads_image`; its parts) -> probability [H, W]
    per_image: Callable[[np.ndarray | None, Parts], np.ndarray] | None = None
    reads_image: bool = False  # decode the image for `per_image` (saliency); fusion and steering read only parts

    def __post_init__(self) -> None:
        if (self.network is None) == (self.per_image is None):
            raise ValueError("a coarse method has either a network pass or a per-image function, not both or neither")
