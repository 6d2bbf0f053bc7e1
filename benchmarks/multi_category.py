"""What happens, stage by stage, to objects whose class the image's label does not name (multi-category images).

    .venv/bin/python benchmarks/multi_category.py runs/demo          # after `make demo`

For every image whose ground truth holds a foreground class other than its label, counts where that other
object's pixels go in each scored stage's pseudo-label PNG: its true class, the image's label, background, or
ignore (255). The demo's policy (stages/predict.py, `rounds.keep_other_classes_from: 2`): before round 2
such pixels become ignore when the network gives them to the unlabelled class; from round 2 they keep that class.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from pipeline.commands.trained import read_run
from pipeline.io import IGNORE, load_mask
from pipeline.data.weak import load_ground_truth, load_weak_dataset


def main(run_dir: Path) -> int:
    cfg, classes, _ = read_run(run_dir)
    run = {"classes": list(classes)}
    records = load_weak_dataset(cfg.data).records
    stages = [row["dir"] for row in json.loads((run_dir / "scores.json").read_text())["stages"]]
    multi = []
    for r in records:
        gt = load_ground_truth(r, cfg.data, len(run["classes"]))
        if gt is not None and np.isin(gt, [c for c in range(1, len(run["classes"])) if c != r.label]).any():
            multi.append((r, gt))
    print(f"{len(multi)} of {len(records)} images hold an object of a class their label does not name")
    print(f"{'stage':<16}{'true class':>11}{'as label':>10}{'background':>11}{'ignore':>8}   (share of those pixels)")
    for stage in stages:
        counts = np.zeros(4)
        for r, gt in multi:
            mask = load_mask(run_dir / stage / f"{r.stem}.png")
            other = (gt != IGNORE) & (gt != 0) & (gt != r.label)
            pred, true = mask[other], gt[other]
            counts += [(pred == true).sum(), (pred == r.label).sum(), (pred == 0).sum(), (pred == IGNORE).sum()]
        share = counts / max(counts.sum(), 1)
        print(f"{stage:<16}{share[0]:>11.3f}{share[1]:>10.3f}{share[2]:>11.3f}{share[3]:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")))
