"""A tiny hand-built weak run (data set + run directory) for the trained / status / report tests.

Data: 4 images of 32 x 32 px (left half dark noise, a bright square of the labelled class), ground truth with class
ids, labels.csv, classes.txt. Run dir: run.json, coarse/ crf/ round1/{train,predict,crf}/ with DONE markers, palette
PNGs per stage, a width-8 pretrained-none model.pt, scores.json with hand-set numbers (see SCORES / PER_IMAGE).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from pipeline.config import Config, DataConfig, ModelConfig, RayConfig, RoundsConfig, RunConfig, TrainConfig
from pipeline.io import save_image, save_mask, write_json
from pipeline.metrics import PER_IMAGE_FILE
from pipeline.models import build_model
from pipeline.stage import network_outputs

CLASSES = ("background", "square", "bar")
STEMS = ("a", "b", "c", "d")
LABELS = {"a": 1, "b": 2, "c": 1, "d": 2}
PER_IMAGE = {"a": 0.9, "b": 0.2, "c": 0.6, "d": 0.4}  # final stage per-image fg Jaccard: best a, worst b
STAGE_SCORES = {"coarse": (0.3, 0.25), "crf": (0.4, 0.35), "round1/predict": (0.5, 0.45), "round1/crf": (0.55, 0.5)}
SIDE = 32


def make_config(tmp: Path, **train) -> Config:
    return Config(run=RunConfig(name="fake", root=str(tmp / "runs")),
                  data=DataConfig(root=str(tmp / "data")),
                  model=ModelConfig(backbone="lite0", pretrained="none", width=8),
                  train=TrainConfig(**{"iterations": 2, "batch_size": 2, "crop": (SIDE, SIDE), "warmup_iters": 1,
                                       "checkpoint_every": 1, "log_every": 1, "jitter": 0.0, **train}),
                  rounds=RoundsConfig(count=1), ray=RayConfig(enabled=False))


def make_data(root: Path) -> None:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label"])
        for i, stem in enumerate(STEMS):
            label = LABELS[stem]
            image = rng.integers(0, 60, (SIDE, SIDE, 3)).astype(np.uint8)
            gt = np.zeros((SIDE, SIDE), np.uint8)
            top = 4 + 3 * i
            gt[top:top + 12, 8:24] = label
            image[gt > 0] = (230, 40, 40) if label == 1 else (40, 40, 230)
            save_image(root / "images" / f"{stem}.png", image)
            save_mask(root / "masks" / f"{stem}.png", gt)
            writer.writerow([f"{stem}.png", CLASSES[label]])
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")


def stage_mask(stem: str, shift: int) -> np.ndarray:
    """A pseudo-label: the true square shifted right by `shift` px, with an ignore band below it."""
    i = STEMS.index(stem)
    mask = np.zeros((SIDE, SIDE), np.uint8)
    top = 4 + 3 * i
    mask[top:top + 12, 8 + shift:24 + shift] = LABELS[stem]
    mask[top + 12:top + 14] = 255
    return mask


def make_run(tmp: Path, cfg: Config | None = None) -> tuple[Path, Config]:
    """Write the data set and a finished 1-round run; returns (run_dir, config)."""
    cfg = cfg or make_config(tmp)
    make_data(Path(cfg.data.root))
    run_dir = Path(cfg.run.root) / cfg.run.name
    write_json(run_dir / "run.json", {"config": cfg.to_dict(), "classes": list(CLASSES), "images": len(STEMS),
                                      "skipped": []})
    for shift, name in enumerate(("coarse", "crf", "round1/predict", "round1/crf")):
        for stem in STEMS:
            save_mask(run_dir / name / f"{stem}.png", stage_mask(stem, 4 - shift))
        (run_dir / name / "DONE").write_text("x\n")
    torch.manual_seed(0)
    model = build_model(cfg.model, network_outputs(cfg, len(CLASSES)))
    (run_dir / "round1" / "train").mkdir(parents=True)
    torch.save(model.state_dict(), run_dir / "round1" / "train" / "model.pt")
    (run_dir / "round1" / "train" / "DONE").write_text("x\n")
    rows = []
    for name, (fg, miou) in STAGE_SCORES.items():
        per_image = PER_IMAGE if name == "round1/crf" else {s: fg for s in STEMS}
        (run_dir / name / PER_IMAGE_FILE).write_text("stem,fg_jaccard\n" + "".join(
            f"{stem},{'' if v is None else v}\n" for stem, v in per_image.items()))
        rows.append({"name": name, "dir": name, "round": 1 if name.startswith("round") else 0, "images": 4,
                     "scored": 4, "fg_jaccard": fg, "miou": miou, "pixel_acc": 0.9,
                     "per_class_iou": {"background": 0.9, "square": miou, "bar": None}})
    write_json(run_dir / "scores.json", {"run": "fake", "classes": list(CLASSES), "stages": rows})
    return run_dir, cfg
