"""The config's rules beyond one key's type and range: keys renamed or removed, and checks across keys.

    check_old_keys(raw)   # before building: one-line errors for keys of older configs
    check_config(cfg)     # after building: the rules that tie keys together

pipeline/config.py's `load_config` calls both; they live here so that the dataclasses stay one page.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config_io import ConfigError

if TYPE_CHECKING:
    from pipeline.config import CoarseConfig, Config

# Keys that were renamed, moved or removed: the loader (pipeline.config_io.build) answers an old "section.key", in a
# YAML file or a --set override, with its message instead of the generic unknown-key error.
RENAMED_KEYS: dict[str, str] = {
    "ray.inference_batch": "renamed to ray.images_per_call (images per call of the sharded passes)",
    "train.num_workers": "renamed to train.loader_workers (DataLoader worker processes)",
    "full.num_workers": "renamed to full.train_workers (Ray Train workers)",
    "rounds.scales": "moved to test_time.scales (the test-time scales of every prediction)",
    "rounds.flip": "moved to test_time.flip (the test-time flip of every prediction)",
    "full.eval_scales": "moved to test_time.scales (the test-time scales of every prediction)",
    "full.eval_flip": "moved to test_time.flip (default true; set test_time.flip: false for a single pass)",
    "crf.confidence": "removed: the CRF stage labels every pixel with its most probable class",
    "train.flip": "removed: training always flips images horizontally at random",
    "train.aux_weight": "removed: the auxiliary loss weight is fixed at 0.4 (AUX_WEIGHT, pipeline/learn/losses.py)",
    "train.ohem_thresh": "removed: the OHEM threshold is fixed at 0.7 (OHEM_THRESH, pipeline/learn/losses.py)",
}

FUSED = ("saliency", "ddt", "cam")  # what coarse.fusion averages
EVIDENCE = ("cam", "ddt", "saliency", "objects")  # what coarse.evidence may name


def check_old_keys(raw: dict) -> None:
    """One-line errors for the coarse keys of configs written before `coarse.method: steered`."""
    coarse = raw.get("coarse")
    if not isinstance(coarse, dict):
        return
    if "classify_objects" in coarse:
        raise ConfigError("config key 'coarse.classify_objects' is gone: use coarse.method: steered with "
                          "coarse.evidence: [cam, objects]")
    fused = coarse.get("fusion")
    if isinstance(fused, (list, tuple)) and "isnet" in fused:
        others = ", ".join(str(name) for name in fused if name != "isnet")
        raise ConfigError(f"config key 'coarse.fusion': isnet steered by the others is now a method of its own: use "
                          f"coarse.method: steered with coarse.evidence: [{others}]")


def _check_coarse_methods(cfg: CoarseConfig) -> None:
    """The lists `coarse.fusion` / `coarse.evidence` of the method that uses them."""
    if cfg.method == "fusion" and (not cfg.fusion or not set(cfg.fusion) <= set(FUSED)):
        raise ConfigError(f"config key 'coarse.fusion': {list(cfg.fusion)} must be a non-empty list of "
                          f"{', '.join(FUSED)}")
    if cfg.method != "steered":
        return
    if not set(cfg.evidence) <= set(EVIDENCE) or not set(cfg.evidence) - {"objects"}:
        raise ConfigError(f"config key 'coarse.evidence': {list(cfg.evidence)} must list some of "
                          f"{', '.join(EVIDENCE)}, at least one besides objects")
    if "objects" in cfg.evidence and not ("cam" in cfg.evidence and cfg.cam_imagenet_classes):
        raise ConfigError("config key 'coarse.evidence': objects classifies ISNet's objects as the label's ImageNet "
                          "classes, so it needs cam in coarse.evidence and coarse.cam_imagenet_classes set")


def holdout_as_text(raw: dict) -> None:
    """`data.holdout: 0.33` (a YAML number) is kept as the text "0.33": the key holds a share or a folder."""
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("holdout"), (int, float)) and not isinstance(data["holdout"],
                                                                                                bool):
        data["holdout"] = repr(data["holdout"])


def holdout_spec(value: str) -> float | Path | None:
    """What `data.holdout` names: None (""), a share of the images (a number in (0, 1)) or a folder (anything else).
    A number outside (0, 1) raises ConfigError naming the key."""
    if not value:
        return None
    try:
        share = float(value)
    except ValueError:
        return Path(value)
    if not 0.0 < share < 1.0:
        raise ConfigError(f"config key 'data.holdout': {value!r} is a number, so it must be a share of the images "
                          "in (0, 1) (or name a folder of held-out photos)")
    return share


def check_config(cfg: Config) -> None:
    """The rules across keys of a built config; raises ConfigError naming the key."""
    if cfg.data.gt_foreground_value in cfg.data.gt_ignore_values:
        raise ConfigError(f"config key 'data.gt_foreground_value': {cfg.data.gt_foreground_value} is also in "
                          "data.gt_ignore_values, so no foreground pixel would be scored (set data.gt_ignore_values)")
    if cfg.coarse.cam_imagenet_classes and cfg.coarse.cam_epochs:
        raise ConfigError("config key 'coarse.cam_imagenet_classes': names ImageNet classes for the ImageNet "
                          f"classifier, so it needs coarse.cam_epochs: 0 (got {cfg.coarse.cam_epochs})")
    _check_coarse_methods(cfg.coarse)
    holdout_spec(cfg.data.holdout)  # a ConfigError naming data.holdout when it is neither "", a share nor a path
