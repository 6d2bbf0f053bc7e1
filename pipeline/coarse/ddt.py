"""Deep Descriptor Transforming (Wei et al. 2017, "Deep Descriptor Transforming for Image Co-Localization").

    mean, pc = ddt_statistics(descriptors)                  # [N, C] -> mean [C], first principal component [C]
    for record, prob in ddt_maps(records, dst, cfg.coarse, max_pixels, seed): ...   # pending records only

All images sharing a label are one group (class-agnostic data: all images, `coarse.ddt_groups: image`: each image
alone). The group's stride-32 descriptors of a frozen ImageNet EfficientNet-Lite0 (the 1280-channel classifier head
map before pooling, image long side `coarse.image_side`) are pooled; their mean and first principal component define a projection, and cells whose
projection is positive are the object the images have in common.

Choices the paper leaves open (documented assumptions):
- Sign of the principal component: an eigenvector's sign is arbitrary. It is oriented so that the mean projection
  of the group's image-border cells is negative (the common object lies mostly inside the frame; the border is
  mostly background), the same background prior the saliency method uses.
- Probability: the projection is bilinearly upsampled to the full image and mapped piecewise-linearly so that 0
  (DDT's decision point) -> 0.5, the image's largest projection -> 1 and its smallest -> 0.
- Descriptors: the head map, not the last block's 320 channels: the 320-channel component over a varied group
  follows scene layout rather than objectness (comparison in docs/results_weak.md).
- Descriptors are computed once, without test-time flips, in float32; statistics in float64 (deterministic).
- Resuming: each group's mean / component is kept in `dst/_ddt/<group>.npz` with the stems it was computed from;
  a resumed run with the same group reuses it and extracts features only for the images still pending.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from pipeline.config import CoarseConfig
from pipeline.io import atomic_write_bytes, read_image
from pipeline.stage import Record, pending

from pipeline.coarse.features import head_features, image_to_tensor, load_backbone, pick_device, piecewise_probability, upsample_to


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
    border = []
    for f in feature_maps:
        cells = np.concatenate([f[:, 0, :], f[:, -1, :], f[:, :, 0], f[:, :, -1]], axis=1)  # [C, n]
        border.append((cells.T.astype(np.float64) - mean) @ pc)
    return -pc if np.mean(np.concatenate(border)) > 0 else pc


def project(feature_map: np.ndarray, mean: np.ndarray, pc: np.ndarray) -> np.ndarray:
    """DDT projection [h, w] of one image's descriptors [C, h, w]."""
    c, h, w = feature_map.shape
    flat = feature_map.reshape(c, -1).T.astype(np.float64)
    return ((flat - mean) @ pc).reshape(h, w).astype(np.float32)


@torch.no_grad()
def extract(model: torch.nn.Module, image: np.ndarray, side: int, device: torch.device) -> np.ndarray:
    """Stride-32 head descriptors [1280, h, w] of one image."""
    x = image_to_tensor(image, side, model).to(device)
    return head_features(model, x)[0].float().cpu().numpy()


def _groups(records: Sequence[Record], mode: str) -> dict[str, list[Record]]:
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        groups[f"label_{r.label}" if mode == "label" else f"image_{r.stem}"].append(r)
    return groups


def _stems_key(records: Sequence[Record]) -> str:
    return hashlib.sha256("\n".join(sorted(r.stem for r in records)).encode()).hexdigest()[:16]


def _load_cached(path: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        if str(f["key"]) != key:
            return None
        return f["mean"], f["pc"]


def _save_cached(path: Path, key: str, mean: np.ndarray, pc: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, key=np.array(key), mean=mean, pc=pc)
    atomic_write_bytes(path, buf.getvalue())


def ddt_maps(records: Sequence[Record], dst: Path, cfg: CoarseConfig, max_pixels: int,
             seed: int) -> Iterator[tuple[Record, np.ndarray]]:
    """Yield (record, foreground probability [H, W]) for every record still pending in `dst`, group by group."""
    torch.manual_seed(seed)
    device = pick_device()
    model = load_backbone(device)
    todo = {r.stem for r in pending(records, dst)}
    for name, group in sorted(_groups(records, cfg.ddt_groups).items()):
        group_todo = [r for r in group if r.stem in todo]
        if not group_todo:
            continue
        cache, key = dst / "_ddt" / f"{name}.npz", _stems_key(group)
        stats = _load_cached(cache, key) if cfg.ddt_groups == "label" else None
        feats: dict[str, np.ndarray] = {}
        sizes: dict[str, tuple[int, int]] = {}
        for r in (group_todo if stats is not None else group):
            image = read_image(r.image, max_pixels)
            sizes[r.stem] = image.shape[:2]
            feats[r.stem] = extract(model, image, cfg.image_side, device)
        if stats is None:
            maps = [feats[r.stem] for r in group]
            descriptors = np.concatenate([m.reshape(m.shape[0], -1).T for m in maps])
            mean, pc = ddt_statistics(descriptors)
            pc = orient_component(pc, mean, maps)
            if cfg.ddt_groups == "label":
                _save_cached(cache, key, mean, pc)
        else:
            mean, pc = stats
        for r in group_todo:
            h, w = sizes[r.stem]
            yield r, piecewise_probability(upsample_to(project(feats[r.stem], mean, pc), h, w), 0.0)
