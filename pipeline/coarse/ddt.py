"""Deep Descriptor Transforming (Wei et al. 2017, "Deep Descriptor Transforming for Image Co-Localization").

    # pass 1, on a shard of a group (shards sum on different workers and merge exactly)
    sums = accumulate(shard_a, side, max_pixels).merge(accumulate(shard_b, side, max_pixels))
    mean, pc = sums.statistics()

    # what stages/coarse.py runs (`method`): pass 1 per label group as a device task, pass 2 per image on the
    # devices of a sharded pass
    group_statistics(group, dst, cfg.coarse, max_pixels)                 # caches dst/_ddt/label_<id>.npz
    projection = Projector(dst, keys)(x=backbone_input(image, side), record=record)   # [h, w], on a device
    prob = projection_probability(projection, image.shape[:2])            # [H, W], on a CPU

All images sharing a label are one group (class-agnostic data: all images, `coarse.ddt_groups: image`: each image
alone). The group's stride-32 descriptors of a frozen ImageNet EfficientNet-Lite0 (the 1280-channel classifier head
map before pooling, image long side `coarse.image_side`) are pooled; their mean and first principal component define
a projection, and cells whose projection is positive are the object the images have in common.

Memory is O(C^2) per group, whatever the group's size: pass 1 extracts features image by image and adds them to
running sums (`DDTSums`: count, sum of descriptors, sum of their outer products, and the same for border cells);
mean, covariance and the component's orientation all follow from those sums. Pass 2 extracts each pending image's
features again and projects them. Re-extracting costs a second CNN forward per pending image, but caching the
features on disk instead would write 1280 x h/32 x w/32 floats per image (GBs for a large class), need clean-up and
crash safety of its own, and tie pass 2 to the worker that ran pass 1. Sums of shards merge exactly (up to float
addition order), so pass 1 can be split across workers. `ddt_statistics` / `orient_component` are the batch
reference (all descriptors in memory), kept for tests and small inputs.

Choices the paper leaves open (documented assumptions):
- Sign of the principal component: an eigenvector's sign is arbitrary. It is oriented so that the mean projection
  of the group's image-border cells is negative (the common object lies mostly inside the frame; the border is
  mostly background), the same background prior the saliency method uses.
- Probability: the projection is bilinearly upsampled to the full image and mapped piecewise-linearly so that 0
  (DDT's decision point) -> 0.5, the image's largest projection -> 1 and its smallest -> 0.
- Descriptors: the head map, not the last block's 320 channels: the 320-channel component over a varied group
  follows scene layout rather than objectness (comparison in docs/experiments.md).
- Descriptors are computed without test-time flips, in float32; statistics in float64 (deterministic). Pass 1 batches
  consecutive images of the same input size; pass 2 runs one image at a time, so an image's map never depends on
  which other images happen to be pending (a resumed run reproduces it bit for bit).
- Resuming: each group's mean / component is kept in `dst/_ddt/<group>.npz` with the stems it was computed from;
  a resumed run with the same group reuses it and does only pass 2, for the images still pending.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from pipeline.config import CoarseConfig
from pipeline.data.record_table import label_groups, sorted_stems
from pipeline.io import atomic_write_bytes, read_image
from pipeline.models.efficientnet_lite import EfficientNetLite0
from pipeline.stage import Record

from pipeline.coarse.features import (backbone_inputs, head_features, image_to_tensor, load_backbone, pick_device,
                                      piecewise_probability, upsample_to)
from pipeline.coarse.method import GroupWork, Method, MethodSetting, NetworkPass

Features = Iterator[tuple[Record, np.ndarray, tuple[int, int]]]  # (record, head map [C, h, w], image (H, W))


def _border_cells(feature_map: np.ndarray) -> np.ndarray:
    """[C, 2w + 2h] border cells of a [C, h, w] map: top row, bottom row, left column, right column (corners twice)."""
    f = feature_map
    return np.concatenate([f[:, 0, :], f[:, -1, :], f[:, :, 0], f[:, :, -1]], axis=1)


def ddt_statistics(descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [C] and unit first principal component [C] of descriptors [N, C] (float64; sign not yet oriented)."""
    d = np.asarray(descriptors, np.float64)
    if d.ndim != 2 or len(d) < 2:
        raise ValueError(f"DDT needs at least 2 descriptors [N, C], got shape {d.shape}")
    mean = d.mean(axis=0)
    centred = d - mean
    cov = centred.T @ centred / len(d)
    _, vectors = np.linalg.eigh(cov)  # ascending eigenvalues
    return mean, vectors[:, -1]


def orient_component(pc: np.ndarray, mean: np.ndarray, feature_maps: Sequence[np.ndarray]) -> np.ndarray:
    """Flip `pc` so the mean projection of the maps' border cells ([C, h, w] each) is negative."""
    border = [(_border_cells(f).T.astype(np.float64) - mean) @ pc for f in feature_maps]
    return -pc if np.mean(np.concatenate(border)) > 0 else pc


@dataclass
class DDTSums:
    """Running sums of a group's descriptors, enough for its mean, covariance and oriented first component.

    `add` updates in place (the accumulator of one pass); `merge` returns a new object and leaves both inputs as
    they are, so shards summed on different workers combine in any order.
    """

    n: int  # descriptors (cells) added
    sum_x: np.ndarray  # [C] float64: sum of descriptors
    sum_xxT: np.ndarray  # [C, C] float64: sum of outer products x x^T
    border_n: int  # border cells added (corners counted twice, as `orient_component` does)
    border_sum: np.ndarray  # [C] float64: sum of border cells

    @classmethod
    def zeros(cls, channels: int) -> DDTSums:
        """Empty sums for `channels`-dimensional descriptors."""
        return cls(0, np.zeros(channels), np.zeros((channels, channels)), 0, np.zeros(channels))

    @property
    def channels(self) -> int:
        return len(self.sum_x)

    def add(self, feature_map: np.ndarray) -> None:
        """Add one image's descriptors [C, h, w] (float32 or float64)."""
        c = feature_map.shape[0]
        if feature_map.ndim != 3 or c != self.channels:
            raise ValueError(f"expected a [{self.channels}, h, w] feature map, got shape {feature_map.shape}")
        x = feature_map.reshape(c, -1).astype(np.float64)  # [C, h*w]
        self.n += x.shape[1]
        self.sum_x += x.sum(axis=1)
        self.sum_xxT += x @ x.T
        border = _border_cells(feature_map)
        self.border_n += border.shape[1]
        self.border_sum += border.sum(axis=1, dtype=np.float64)

    def merge(self, other: DDTSums) -> DDTSums:
        """The sums of both shards (a new object)."""
        if other.channels != self.channels:
            raise ValueError(f"cannot merge DDT sums of {self.channels} and {other.channels} channels")
        return DDTSums(self.n + other.n, self.sum_x + other.sum_x, self.sum_xxT + other.sum_xxT,
                       self.border_n + other.border_n, self.border_sum + other.border_sum)

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean [C] and unit first principal component [C], oriented so the border cells project negative."""
        if self.n < 2:
            raise ValueError(f"DDT needs at least 2 descriptors, got {self.n}")
        mean = self.sum_x / self.n
        pc = _leading_eigenvector(self.sum_xxT / self.n - np.outer(mean, mean))
        border_projection = (self.border_sum / self.border_n - mean) @ pc
        return mean, (-pc if border_projection > 0 else pc)


def _leading_eigenvector(matrix: np.ndarray) -> np.ndarray:
    """Unit eigenvector [C] of the largest eigenvalue of a symmetric matrix [C, C] (float64), computed on one thread:
    a multi-threaded LAPACK splits the work, and so the last bits, by its thread count, and the statistics must be
    the same bits in every process (serial run, Ray task) for the maps to be."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, vectors = torch.linalg.eigh(torch.from_numpy(np.ascontiguousarray(matrix, np.float64)))  # ascending
    finally:
        torch.set_num_threads(threads)
    return vectors[:, -1].numpy()


def project(feature_map: np.ndarray, mean: np.ndarray, pc: np.ndarray) -> np.ndarray:
    """DDT projection [h, w] of one image's descriptors [C, h, w]."""
    c, h, w = feature_map.shape
    flat = feature_map.reshape(c, -1).T.astype(np.float64)
    return ((flat - mean) @ pc).reshape(h, w).astype(np.float32)


@torch.no_grad()
def iter_features(records: Iterable[Record], model: EfficientNetLite0, side: int, device: torch.device,
                  max_pixels: int, batch_size: int = 1) -> Features:
    """Yield (record, head map [1280, h, w], image size) in order; runs of same-size inputs share a forward pass."""
    batch: list[tuple[Record, torch.Tensor, tuple[int, int]]] = []

    def flush() -> Features:
        x = torch.cat([t for _, t, _ in batch]).to(device)
        maps = head_features(model, x).float().cpu().numpy()
        for (record, _, size), feature_map in zip(batch, maps):
            yield record, feature_map, size
        batch.clear()

    for r in records:
        image = read_image(r.image, max_pixels)
        x = image_to_tensor(image, side, model)
        if batch and (len(batch) >= batch_size or batch[0][1].shape != x.shape):
            yield from flush()
        batch.append((r, x, image.shape[:2]))
    if batch:
        yield from flush()


def _backbone(model: EfficientNetLite0 | None) -> tuple[EfficientNetLite0, torch.device]:
    if model is not None:
        return model, next(model.parameters()).device
    device = pick_device()
    return load_backbone(device), device


def accumulate(records: Iterable[Record], side: int, max_pixels: int, model: EfficientNetLite0 | None = None,
               batch_size: int = 8) -> DDTSums:
    """Pass 1 on a shard: the DDT sums of the records' head features (backbone loaded when `model` is None)."""
    model, device = _backbone(model)
    sums = DDTSums.zeros(model._conv_head.out_channels)
    for _, feature_map, _ in iter_features(records, model, side, device, max_pixels, batch_size):
        sums.add(feature_map)
    return sums


def projection_probability(projection: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Foreground probability [H, W] from a DDT projection [h, w] (0 is the decision point)."""
    return piecewise_probability(upsample_to(projection, *size), 0.0)


def ddt_groups(records: Sequence[Record], mode: str) -> Iterator[tuple[str, Sequence[Record]]]:
    """(name, records) of every DDT group in name order: "label_<id>" (`coarse.ddt_groups: label`, read through the
    table's label index) or "image_<stem>" (`image`, one record each, in record order)."""
    if mode == "image":
        return ((f"image_{r.stem}", (r,)) for r in records)
    return iter(sorted((f"label_{label}", group) for label, group in label_groups(records)))


def stems_key(records: Sequence[Record]) -> str:
    """The key a group's cached statistics are kept under: a hash of its stems (sorted, joined by newlines)."""
    digest = hashlib.sha256()
    for i, stem in enumerate(sorted_stems(records)):
        digest.update((f"\n{stem}" if i else stem).encode())
    return digest.hexdigest()[:16]


def _load_cached(path: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        if str(f["key"]) != key:
            return None
        return f["mean"], f["pc"]


def _save_cached(path: Path, key: str, mean: np.ndarray, pc: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, key=np.array(key), mean=mean, pc=pc)
    atomic_write_bytes(path, buf.getvalue())


# --- the two passes as stages/coarse.py runs them -----------------------------------------------------------------

def group_statistics(group: Sequence[Record], dst: str, cfg: CoarseConfig, max_pixels: int) -> str:
    """Pass 1 of one label group as its own task: computes and caches `dst/_ddt/<group>.npz` unless the cache already
    holds this group's statistics; returns the group's name."""
    name = f"label_{group[0].label}"
    cache, key = Path(dst) / "_ddt" / f"{name}.npz", stems_key(group)
    if _load_cached(cache, key) is None:
        _save_cached(cache, key, *accumulate(group, cfg.image_side, max_pixels).statistics())
    return name


class Projector:
    """Pass 2 on a device: an image's projection [h, w] from its backbone input [3, h', w'] (`backbone_input`).

    `keys` maps each label group to its `stems_key`, whose statistics pass 1 cached in `dst/_ddt` (loaded once per
    group); without `keys` (`coarse.ddt_groups: image`) each image is its own group, and its statistics come from
    its own features. `projection_probability` turns the projection into the image's probability map."""

    def __init__(self, dst: str, keys: dict[str, str] | None):
        self.model, self.device = _backbone(None)
        self.dst, self.keys = Path(dst), keys
        self.stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @torch.no_grad()
    def __call__(self, x: np.ndarray, record: Record) -> np.ndarray:
        feature_map = head_features(self.model, torch.tensor(x)[None].to(self.device))[0].float().cpu().numpy()
        if self.keys is None:
            sums = DDTSums.zeros(feature_map.shape[0])
            sums.add(feature_map)
            return project(feature_map, *sums.statistics())
        return project(feature_map, *self._group(f"label_{record.label}"))

    def _group(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self.stats:
            cache = self.dst / "_ddt" / f"{name}.npz"
            stats = _load_cached(cache, self.keys[name])
            if stats is None:
                raise FileNotFoundError(f"{cache}: DDT statistics of group {name} missing or stale "
                                        "(pass 1, group_statistics, writes them)")
            self.stats[name] = stats
        return self.stats[name]


def method(setting: MethodSetting) -> Method:
    """`coarse.method: ddt`: pass 1 (`group_statistics`) for each label group that still has pending images, one
    device task per group; then pass 2 per image (`Projector`). With `coarse.ddt_groups: image` there is no group
    work: each image's statistics come from its own features in pass 2."""
    cfg, keys, work = setting.coarse, None, None
    if cfg.ddt_groups == "label":
        groups = dict(ddt_groups(setting.records, "label"))  # each a view of the table: no record held
        waiting = {f"label_{r.label}" for r in setting.todo}
        work = GroupWork(partial(group_statistics, dst=str(setting.dst), cfg=cfg, max_pixels=setting.max_pixels),
                         [g for name, g in sorted(groups.items()) if name in waiting], desc="coarse ddt statistics")
        keys = {name: stems_key(g) for name, g in groups.items() if name in waiting}
    return Method(group_work=work,
                  network=NetworkPass(prepare=partial(backbone_inputs, side=cfg.image_side),
                                      network=partial(Projector, str(setting.dst), keys),
                                      finish=projection_probability))
