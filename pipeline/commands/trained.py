"""Load a trained network back from a finished run directory (or from a bare checkpoint file).

    model, classes, cfg = load_run_model(Path("runs/demo"))            # last finished round, eval mode, CPU
    model, classes, cfg = load_run_model(Path("runs/demo"), round=1)   # a given round
    model = load_checkpoint_model(Path("runs/demo/round2/train/model.pt"), cfg.model, classes)

A round counts as finished when `round{k}/train/DONE` exists (the runner writes it after `model.pt`). The network
is rebuilt from the run's own `run.json` config with `pretrained: none` (the checkpoint holds every weight, so the
ImageNet backbone is not read) and loaded strictly with `torch.load(weights_only=True)`. Every problem raises
`RunError` naming the file and the reason.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from pipeline.config import RENAMED_KEYS, Config, ConfigError, ModelConfig, build
from pipeline.io import read_json
from pipeline.models import build_model
from pipeline.stage import network_classes, stage_done


class RunError(ValueError):
    """A run directory or checkpoint cannot be used; the message names the path and says why."""


def read_run(run_dir: Path) -> tuple[Config, tuple[str, ...], dict]:
    """(config, classes, the raw run.json) of a run directory; RunError when it is not one."""
    run_dir = Path(run_dir)
    path = run_dir / "run.json"
    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: run directory not found (run `coarse2fine run` first)")
    if not path.is_file():
        raise RunError(f"{path}: not found, so {run_dir} is not a run directory (run `coarse2fine run` first)")
    try:
        raw = read_json(path)
        cfg = build(Config, raw["config"], "", renamed=RENAMED_KEYS)
        classes = tuple(str(c) for c in raw["classes"])
    except (ValueError, KeyError, TypeError) as err:  # JSONDecodeError and ConfigError are ValueErrors
        if isinstance(err, ConfigError):  # e.g. a key a later version removed
            raise RunError(f"{path}: unusable config ({err}); if the run was made by an older version, "
                           f"rerun `coarse2fine run` with its config to update it") from None
        raise RunError(f"{path}: unusable content ({err})") from None
    if len(classes) < 2:
        raise RunError(f"{path}: 'classes' must list background and at least one class, got {list(classes)}")
    return cfg, classes, raw


def finished_rounds(run_dir: Path) -> list[int]:
    """Round numbers k whose `round{k}/train/DONE` exists, ascending."""
    rounds = []
    for d in Path(run_dir).glob("round*"):
        m = re.fullmatch(r"round(\d+)", d.name)
        if m and stage_done(d / "train"):
            rounds.append(int(m.group(1)))
    return sorted(rounds)


def load_checkpoint_model(checkpoint: Path, model_cfg: ModelConfig, classes: Sequence[str]) -> nn.Module:
    """Build `model_cfg` (pretrained none) for len(classes) and load `checkpoint` strictly; eval mode, CPU.

    The file may be a plain state_dict (`model.pt`) or a training checkpoint holding one under "model"
    (`last.pt`, `best.pt`).
    """
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise RunError(f"{checkpoint}: checkpoint file not found")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds (pickle, zip, EOF); all mean "unreadable"
        raise RunError(f"{checkpoint}: cannot read checkpoint ({type(err).__name__}: {err})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise RunError(f"{checkpoint}: expected a state_dict, got {type(state).__name__}")
    model = build_model(dataclasses.replace(model_cfg, pretrained="none"), len(classes))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise RunError(f"{checkpoint}: weights do not fit the model config "
                       f"({model_cfg.backbone}, width {model_cfg.width}, {len(classes)} classes): "
                       f"{' '.join(first[:3])[:400]}") from None
    return model.eval()


def load_run_model(run_dir: Path, round: int | None = None) -> tuple[nn.Module, tuple[str, ...], Config]:
    """The network of the last finished round of `run_dir` (or of `round`), the classes it predicts (background /
    foreground for a `rounds.foreground_network` run) and the run's config."""
    run_dir = Path(run_dir)
    cfg, classes, _ = read_run(run_dir)
    if round is None:
        done = finished_rounds(run_dir)
        if not done:
            raise RunError(f"{run_dir}: no finished training round (no round<k>/train/DONE; "
                           f"rounds.count={cfg.rounds.count}): run `coarse2fine run` first")
        round = done[-1]
    train_dir = run_dir / f"round{round}" / "train"
    if not stage_done(train_dir):
        state = "was not started" if not train_dir.is_dir() else "is incomplete (no DONE marker)"
        raise RunError(f"{train_dir}: round {round} training {state}")
    classes = network_classes(cfg, classes)
    return load_checkpoint_model(train_dir / "model.pt", cfg.model, classes), classes, cfg
