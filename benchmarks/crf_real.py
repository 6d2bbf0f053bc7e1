"""Coarse vs coarse + dense CRF on real photos, for several CRF parameter settings (how the CRFConfig defaults were
chosen).

    python benchmarks/crf_real.py --data ../shared/data --cpus 2            # grabcut + coco_mval_dev, all settings
    python benchmarks/crf_real.py --data ../shared/data --sets grabcut --limit 20

Coarse maps are computed here with two simple methods (the project's coarse stage is scored by `orchestrate.py
evaluate`; these are the simple baselines of docs/results_weak.md, re-implemented small):
- `centre`: a centred Gaussian prior, sigma = 0.25 x side; raw mask p >= 0.5.
- `saliency`: SLIC superpixels (200, Lab), each scored by the median Lab distance to the border superpixels (robust
  to an object touching the border), normalised to [0, 1]; raw mask = Otsu threshold.
Each map is rescaled piecewise-linearly so its raw threshold sits at 0.5, then `pipeline.crf.refine_probs` refines the
2-class map (background, object). Score: mean per-image foreground Jaccard (`pipeline.metrics.foreground_jaccard`),
GrabCut's 128 band ignored; COCO-MVal also on the instances covering >= 10 % of the image.
Data is read from --data (never copied). Work runs as Ray tasks via `pipeline.orchestration.parallel.map_tasks`.

Measured (all 460 images, 2 shared cores, 2360 s; Gaussian sxy 3 / compat 3, 10 iterations in every setting):

| method   | set                 |   n |   raw | sxy50/srgb13/w10 | sxy80/srgb13/w10 | sxy80/srgb5/w4 (DeepLab) |
|----------|---------------------|-----|-------|------------------|------------------|--------------------------|
| centre   | grabcut             |  50 | 0.404 |            0.533 |        **0.596** |                    0.548 |
| centre   | coco_mval_dev       | 410 | 0.147 |            0.156 |        **0.161** |                    0.157 |
| centre   | coco_mval_dev >=10% | 160 | 0.312 |            0.324 |            0.320 |                **0.329** |
| saliency | grabcut             |  50 | 0.445 |            0.477 |            0.478 |                **0.482** |
| saliency | coco_mval_dev       | 410 | 0.147 |        **0.150** |        **0.150** |                    0.148 |
| saliency | coco_mval_dev >=10% | 160 | 0.301 |        **0.306** |            0.305 |                    0.304 |

The CRF helps in every row. sxy80/srgb13/w10 is best by a margin where the coarse map is far off (centre prior on
GrabCut, +0.06 over sxy50) and within ~0.01 (one standard error on COCO-MVal) of the best elsewhere, so it is the
CRFConfig default. This saliency re-implementation is weaker than the baseline table's.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from pipeline.config import CRFConfig, RayConfig  # noqa: E402
from pipeline.crf import refine_probs  # noqa: E402
from pipeline.io import load_mask, read_image  # noqa: E402
from pipeline.metrics import foreground_jaccard  # noqa: E402
from pipeline.orchestration.parallel import map_tasks, ray_session  # noqa: E402

BASE = CRFConfig()
# name -> CRFConfig (Gaussian sxy 3 / compat 3 and 10 iterations in all; bilateral sxy / srgb / compat vary)
SETTINGS = {
    "sxy50/srgb13/w10 (baselines)": dataclasses.replace(BASE, bilateral_sxy=50.0, bilateral_srgb=13.0,
                                                      bilateral_compat=10.0),
    "sxy80/srgb13/w10": dataclasses.replace(BASE, bilateral_sxy=80.0, bilateral_srgb=13.0, bilateral_compat=10.0),
    "sxy80/srgb5/w4 (DeepLab)": dataclasses.replace(BASE, bilateral_sxy=80.0, bilateral_srgb=5.0,
                                                    bilateral_compat=4.0),
}
METHODS = ("centre", "saliency")


def centre_prior(h: int, w: int) -> tuple[np.ndarray, float]:
    yy, xx = np.mgrid[:h, :w]
    p = np.exp(-(((xx - w / 2) / (0.25 * w)) ** 2 + ((yy - h / 2) / (0.25 * h)) ** 2) / 2)
    return p.astype(np.float32), 0.5


def border_saliency(image: np.ndarray) -> tuple[np.ndarray, float]:
    from skimage.color import rgb2lab
    from skimage.filters import threshold_otsu
    from skimage.segmentation import slic

    lab = rgb2lab(image)
    seg = slic(image, n_segments=200, compactness=10, start_label=0)
    n = seg.max() + 1
    counts = np.bincount(seg.ravel(), minlength=n).astype(np.float64)
    mean = np.stack([np.bincount(seg.ravel(), lab[..., c].ravel(), minlength=n) for c in range(3)], 1)
    mean /= np.maximum(counts[:, None], 1)
    border = np.unique(np.concatenate([seg[0], seg[-1], seg[:, 0], seg[:, -1]]))
    dist = np.linalg.norm(mean[:, None, :] - mean[None, border, :], axis=2)
    score = np.median(dist, axis=1)
    score = (score - score.min()) / max(score.max() - score.min(), 1e-9)
    p = score[seg].astype(np.float32)
    return p, float(threshold_otsu(p)) if p.max() > p.min() else 0.5


def rescale_to_half(p: np.ndarray, t: float) -> np.ndarray:
    """Piecewise-linear map of [0, t, 1] to [0, 0.5, 1], so the raw mask is p >= 0.5 afterwards."""
    t = float(np.clip(t, 1e-3, 1 - 1e-3))
    return np.where(p < t, 0.5 * p / t, 0.5 + 0.5 * (p - t) / (1 - t)).astype(np.float32)


def score_one(item: tuple[str, str, str, str]) -> dict:
    """Jaccard of every method raw and after every CRF setting on one image (a Ray task: paths in, numbers out)."""
    dataset, image_path, gt_path, _ = item
    image = read_image(image_path)
    gt = load_mask(gt_path)
    if gt.shape != image.shape[:2]:
        raise ValueError(f"{gt_path}: mask {gt.shape} does not match image {image.shape[:2]}")
    gt_fg, valid = gt == 255, (gt != 128) if dataset == "grabcut" else np.ones(gt.shape, bool)
    out = {"dataset": dataset, "fg_fraction": float(gt_fg.mean())}
    for method in METHODS:
        p, t = centre_prior(*gt.shape) if method == "centre" else border_saliency(image)
        p = rescale_to_half(p, t)
        out[f"{method}|raw"] = foreground_jaccard(p >= 0.5, gt_fg, valid)
        probs = np.stack([1 - p, p])
        for name, cfg in SETTINGS.items():
            q = refine_probs(image, probs, cfg)
            out[f"{method}|{name}"] = foreground_jaccard(q[1] > q[0], gt_fg, valid)
    return out


def list_items(data: Path, sets: list[str], limit: int) -> list[tuple[str, str, str, str]]:
    items = []
    for name in sets:
        folder = data / name
        if not (folder / "img").is_dir() or not (folder / "gt").is_dir():
            raise SystemExit(f"{folder}: expected img/ and gt/ subfolders (see {data}/README.md)")
        images = sorted(p for p in (folder / "img").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
        for path in images[:limit or None]:
            gt = folder / "gt" / f"{path.stem}.png"
            if not gt.is_file():
                raise SystemExit(f"{gt}: ground truth missing for {path}")
            items.append((name, str(path), str(gt), path.stem))
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data", help="folder holding grabcut/ and coco_mval_dev/")
    parser.add_argument("--sets", nargs="+", default=["grabcut", "coco_mval_dev"])
    parser.add_argument("--limit", type=int, default=0, help="first N images per set (0 = all)")
    parser.add_argument("--cpus", type=int, default=2, help="Ray CPUs (0 = run serially)")  # this machine has 2
    args = parser.parse_args()
    items = list_items(Path(args.data), args.sets, args.limit)
    ray_cfg = RayConfig(enabled=args.cpus > 0, num_cpus=args.cpus, task_memory_mb=800,
                        temp_dir="/tmp/c2f-crf-real-ray")
    start = time.time()
    with ray_session(ray_cfg):
        rows = map_tasks(score_one, items, ray_cfg, desc="crf_real")
    print(f"{len(rows)} images in {time.time() - start:.0f} s; mean per-image foreground Jaccard, raw -> CRF")
    columns = [("raw", "raw")] + [(name, name) for name in SETTINGS]
    groups = []
    for name in args.sets:
        groups.append((f"{name}", [r for r in rows if r["dataset"] == name]))
        if name == "coco_mval_dev":
            groups.append((f"{name} >=10%", [r for r in rows if r["dataset"] == name and r["fg_fraction"] >= 0.1]))
    header = f"| {'method':9s} | {'set':20s} | {'n':>3s} | " + " | ".join(f"{c:>26s}" for c, _ in columns) + " |"
    print(header)
    print("|" + "|".join("-" * (len(cell) + 0) for cell in header.split("|")[1:-1]) + "|")
    for method in METHODS:
        for group, subset in groups:
            if not subset:
                continue
            cells = [f"{np.mean([r[f'{method}|{key}'] for r in subset]):26.3f}" for _, key in columns]
            print(f"| {method:9s} | {group:20s} | {len(subset):3d} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
