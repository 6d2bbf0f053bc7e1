"""How the image's label should steer the class-agnostic salient map: rules scored on the tune and report halves.

    .venv/bin/python benchmarks/salient_steering.py --config configs/coco_mval_isnet.yaml \
        --salient runs/coco_mval_isnet/coarse/_parts/isnet --evidence cam=runs/coco_mval_isnet/coarse/_parts/cam \
        --objects runs/coco_mval_isnet/coarse/_parts/objects

Reads the coarse soft maps of finished runs (ISNet's salient map, and class evidence such as the label group's DDT
map or the label's CAM) and scores, without writing anything, each way of combining them: mean per-image foreground
Jaccard of `p >= 0.5` against the ground truth, on all images, each half, and each half's instances covering
>= 10 % of the photo (halves as in benchmarks/split_scores.py). The rules are those of
pipeline/coarse/fusion.py; with `--objects` (the `_parts/objects` of a `coarse.classify_objects` run), also the
steering by each evidence map and the objects' crop probabilities, over a grid of the crop's weight. The last
two rows are ceilings, not methods: the one salient object, and the set of salient objects, that best match the
ground truth, i.e. what a perfect choice among the salient map's objects would score.
"""
from __future__ import annotations

import argparse
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.coarse.fusion import geometric_mean, label_objects, steer_salient  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.data.weak import load_ground_truth, load_weak_dataset  # noqa: E402
from pipeline.io import IGNORE, load_probs  # noqa: E402
from pipeline.metrics import foreground_jaccard  # noqa: E402
from split_scores import halves  # noqa: E402


def rules(salient: np.ndarray, evidence: dict[str, np.ndarray],
          objects: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every candidate foreground probability map of one image."""
    out = {"salient": salient}
    for name, ev in evidence.items():
        out[name] = ev
        out[f"geo(salient,{name})"] = geometric_mean([salient, ev])
        for keep in (0.3, 0.5, 0.8, 1.0):
            for least in (0.0, 0.3, 0.5):
                out[f"steer(salient,{name}) keep {keep} min {least}"] = steer_salient(salient, [ev], keep, least)
        if objects is not None:
            for weight in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5):
                for least in (0.25, 0.3, 0.35):
                    out[f"steer(salient,{name},objects) weight {weight} keep 0.5 min {least}"] = steer_salient(
                        salient, [ev], 0.5, least, object_evidence=objects, object_weight=weight)
    if len(evidence) > 1:
        out["steer(salient,all)"] = steer_salient(salient, list(evidence.values()))
    return out


def score(job: tuple) -> tuple[str, float, dict[str, float]] | None:
    record, cfg, num_classes, salient_dir, evidence_dirs, objects_dir = job
    gt = load_ground_truth(record, cfg.data, num_classes)
    if gt is None or not (Path(salient_dir) / f"{record.stem}.png").is_file():
        return None  # no ground truth, or its salient map is not written yet
    valid, gt_fg = gt != IGNORE, gt == record.label
    salient = load_probs(Path(salient_dir) / f"{record.stem}.npz")[0][1]
    evidence = {name: load_probs(Path(d) / f"{record.stem}.npz")[0][1] for name, d in evidence_dirs.items()}
    objects = load_probs(Path(objects_dir) / f"{record.stem}.npz")[0][1] if objects_dir else None
    share = float(gt_fg[valid].mean()) if valid.any() else 0.0
    scores = {name: foreground_jaccard(p >= 0.5, gt_fg, valid) for name, p in rules(salient, evidence, objects).items()}
    scores.update(oracles(salient, gt_fg, valid))
    return record.stem, share, scores


def oracles(salient: np.ndarray, gt_fg: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """Ceilings, not methods (they use the ground truth): the one salient object that best matches it, and the best
    set of salient objects (greedy: add the object that raises the Jaccard most, while one does)."""
    objects, count = label_objects(salient)
    single = max([foreground_jaccard(objects == k, gt_fg, valid) for k in range(1, count + 1)], default=0.0)
    chosen, best, left = np.zeros(salient.shape, bool), 0.0, set(range(1, count + 1))
    while left:
        score, k = max((foreground_jaccard(chosen | (objects == k), gt_fg, valid), k) for k in left)
        if score <= best:
            break
        best, chosen = score, chosen | (objects == k)
        left.remove(k)
    return {"oracle: best single salient object": single, "oracle: best set of salient objects (greedy)": best}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config naming the data set and its ground truth")
    parser.add_argument("--salient", required=True, type=Path, help="stage folder of salient maps (<stem>.npz)")
    parser.add_argument("--evidence", nargs="+", default=[], metavar="NAME=FOLDER", help="class-evidence maps")
    parser.add_argument("--objects", type=Path, help="crop probabilities of a classify_objects run (_parts/objects)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    cfg = load_config(args.config)
    dataset = load_weak_dataset(cfg.data)
    evidence = dict(item.split("=", 1) for item in args.evidence)
    objects = str(args.objects) if args.objects else ""
    jobs = [(r, cfg, len(dataset.classes), str(args.salient), evidence, objects) for r in dataset.records]
    with Pool(args.workers) as pool:
        results = [r for r in pool.map(score, jobs, chunksize=8) if r is not None]
    tune, report = halves([r.stem for r in dataset.records])
    subsets = {"all": lambda s, a: True, "tune": lambda s, a: s in tune,
               "tune >=10%": lambda s, a: s in tune and a >= 0.10, "report": lambda s, a: s in report,
               "report >=10%": lambda s, a: s in report and a >= 0.10}
    names = list(results[0][2])
    print("| rule | " + " | ".join(f"{k} ({sum(f(s, a) for s, a, _ in results)})" for k, f in subsets.items()) + " |")
    print("|---|" + "---|" * len(subsets))
    for name in names:
        cells = [np.mean([j[name] for s, a, j in results if f(s, a)]) for f in subsets.values()]
        print(f"| {name} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
