"""Dense-CRF appearance kernels on a run's stage folder: mean per-image foreground Jaccard of its soft maps, raw and
refined with each kernel, on all images and on those whose ground-truth object covers >= 10 % of the image
(the subset of instances covering >= 10 % of the photo). How `rounds_crf.bilateral_*` in configs/coco_mval.yaml was chosen (docs/results_weak.md).

    .venv/bin/python benchmarks/crf_kernels.py --config configs/coco_mval.yaml --stage runs/coco_mval/coarse
    .venv/bin/python benchmarks/crf_kernels.py --config configs/coco_mval.yaml --stage runs/coco_mval/round1/predict \
        --kernels 80/10 50/5 50/10 80/5 30/5 --workers 2

Each kernel is `sxy/compat` of the bilateral (appearance) term; every other CRF setting is the config's `crf:`
section. Every `<stem>.npz` of the stage is refined with `pipeline.crf.refine_probs` and scored as the pipeline's
evaluate stage does (arg-max of the soft map, the image's label vs ground truth, `pipeline.metrics`); nothing is
written. Cost: ~0.25 s per image and kernel on one core (COCO-MVal, 410 photos x 5 kernels: ~8 min on 2 workers).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import Config, load_config  # noqa: E402
from pipeline.crf import refine_probs  # noqa: E402
from pipeline.io import IGNORE, load_probs, read_image  # noqa: E402
from pipeline.metrics import foreground_jaccard  # noqa: E402
from pipeline.stage import Record  # noqa: E402
from pipeline.data.weak import load_ground_truth, load_weak_dataset  # noqa: E402
from split_scores import halves  # noqa: E402


def parse_kernel(text: str) -> tuple[float, float]:
    try:
        sxy, compat = (float(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"kernel {text!r}: expected sxy/compat, e.g. 50/5") from None
    return sxy, compat


def score_image(args: tuple[Record, Config, str, list[tuple[float, float]], int]) -> tuple[float, list[float]] | None:
    """(ground-truth foreground share, [raw Jaccard, Jaccard per kernel]) of one image; None without ground truth."""
    record, cfg, stage, kernels, num_classes = args
    gt = load_ground_truth(record, cfg.data, num_classes)
    if gt is None:
        return None
    probs, class_ids = load_probs(Path(stage) / f"{record.stem}.npz")
    image = read_image(record.image, cfg.data.max_pixels)
    valid, gt_fg = gt != IGNORE, gt == record.label
    maps = [probs] + [refine_probs(image, probs, dataclasses.replace(cfg.crf, bilateral_sxy=s, bilateral_compat=c))
                      for s, c in kernels]
    return float(gt_fg[valid].mean()) if valid.any() else 0.0, [
        foreground_jaccard(class_ids[np.argmax(m, axis=0)] == record.label, gt_fg, valid) for m in maps]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the run's config (data set, ground truth, crf section)")
    parser.add_argument("--stage", required=True, help="a stage folder of soft maps, e.g. runs/coco_mval/coarse")
    parser.add_argument("--kernels", nargs="+", type=parse_kernel, default=[parse_kernel(k) for k in
                        ("80/10", "50/5", "50/10", "80/5", "30/5")], help="bilateral sxy/compat pairs")
    parser.add_argument("--workers", type=int, default=2, help="processes")
    parser.add_argument("--limit", type=int, default=0, help="first N images only (0 = all)")
    parser.add_argument("--half", choices=["tune", "report"], help="only this half of the images (split_scores.py)")
    args = parser.parse_args()
    cfg = load_config(args.config)
    stage = Path(args.stage)
    if not stage.is_dir():
        parser.error(f"--stage {stage}: no such folder")
    dataset = load_weak_dataset(cfg.data)
    records = [r for r in dataset.records if (stage / f"{r.stem}.npz").is_file()]
    if not records:
        parser.error(f"--stage {stage}: no <stem>.npz soft maps of this config's images")
    if args.half:
        tune, report = halves([r.stem for r in dataset.records])
        records = [r for r in records if r.stem in (tune if args.half == "tune" else report)]
    records = records[:args.limit] if args.limit else records
    jobs = [(r, cfg, str(stage), args.kernels, len(dataset.classes)) for r in records]
    with Pool(args.workers) as pool:
        results = [r for r in pool.map(score_image, jobs, chunksize=4) if r is not None]
    share = np.array([r[0] for r in results])
    scores = np.array([r[1] for r in results])
    big = share >= 0.10
    print(f"{stage}: {len(results)} images with ground truth, {int(big.sum())} with an object >= 10 % of the image")
    print("| kernel (sxy/compat) | all | >= 10 % | < 10 % |")
    print("|---|---|---|---|")
    for i, name in enumerate(["raw"] + [f"{s:g}/{c:g}" for s, c in args.kernels]):
        col = scores[:, i]
        cells = [f"{col[m].mean():.4f}" if m.any() else "-" for m in (np.ones_like(big), big, ~big)]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
