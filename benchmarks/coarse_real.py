"""Each coarse method on real photos, via the coarse and CRF stages: mean per-image foreground Jaccard, raw and +CRF.

    .venv/bin/python benchmarks/coarse_real.py ../shared/data/grabcut
    .venv/bin/python benchmarks/coarse_real.py ../shared/data/coco_mval_dev --methods saliency ddt fusion --limit 100

The data layout is inferred from the folder name: `grabcut` (class-agnostic, 128 = ignore band) or COCO-MVal (label =
the class name before the two-digit index in the file name, `^(.*?)\\d\\d_`); both have `img/` and `gt/` with 255 =
foreground. Each method runs through the real stage (`stages/coarse.py`, Ray with 2 CPUs by default) into a scratch
run folder, then `stages/crf.py` refines it. Scoring: a pixel is foreground when the foreground probability in
`<stem>.npz` is >= 0.5 (raw) or when the CRF's arg-max is the image's class (+CRF); GT pixels in the ignore band are
not scored. Also scored on the large instances (`common.LARGE_SHARE`). The data is read in place, never copied.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from common import LARGE_SHARE, arguments, foreground_share, require, subset_means
from pipeline.config import load_config
from pipeline.data.weak import load_ground_truth, load_weak_dataset
from pipeline.io import load_probs
from pipeline.metrics import foreground_jaccard
from pipeline.orchestration.parallel import ray_session
from pipeline.stage import StageContext
from stages import coarse as coarse_stage
from stages import crf as crf_stage

METHODS = ("saliency", "ddt", "ddt_image", "cam", "fusion")  # ddt_image = ddt with coarse.ddt_groups=image


def data_overrides(data_dir: Path) -> list[str]:
    shared = [f"data.root={data_dir}", "data.images=img", "data.masks=gt", "data.labels=''", "data.classes=''",
              "data.gt_foreground_value=255"]
    if "grabcut" in data_dir.name.lower():
        return shared + ["data.class_agnostic=true", "data.gt_ignore_values=[128]"]
    return shared + ["data.label_pattern='^(.*?)\\d\\d_'", "data.gt_ignore_values=[]"]


def method_overrides(method: str) -> list[str]:
    if method == "ddt_image":
        return ["coarse.method=ddt", "coarse.ddt_groups=image"]
    return [f"coarse.method={method}"]


def score(ctx: StageContext, folder: Path, soft: bool) -> tuple[dict[str, float], set[str]]:
    """({stem: foreground Jaccard}, the stems of large instances) over the records with ground truth."""
    scores, large = {}, set()
    for r in ctx.records:
        gt = load_ground_truth(r, ctx.cfg.data)
        if gt is None:
            continue
        probs, class_ids = load_probs(folder / f"{r.stem}.npz")
        if soft:
            pred = (1.0 - probs[list(class_ids).index(0)]) >= 0.5
        else:
            pred = np.asarray(class_ids)[np.argmax(probs, axis=0)] == r.label
        valid = gt != 255
        scores[r.stem] = foreground_jaccard(pred, gt == r.label, valid)
        if foreground_share(gt == r.label, valid) >= LARGE_SHARE:
            large.add(r.stem)
    return scores, large


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("data_dir", type=Path, help="grabcut or coco_mval_dev folder (img/ + gt/)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to score")
    parser.add_argument("--limit", type=int, default=0, help="use the first N images only (0 = all)")
    parser.add_argument("--no-crf", action="store_true", help="score raw maps only")
    parser.add_argument("--work", type=Path, default=Path("/tmp/coarse_real"), help="scratch run folder")
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides, e.g. coarse.image_side=320")
    parser.add_argument("--cpus", type=int, default=2, help="local Ray cluster size (this machine's cores)")
    args = parser.parse_args()
    for sub in ("img", "gt"):
        require(args.data_dir / sub, "the data folder needs img/ and gt/")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    base = data_overrides(args.data_dir.resolve()) + [f"ray.num_cpus={args.cpus}"] + list(args.set)
    rows = []
    cfg0 = load_config(overrides=base)
    with ray_session(cfg0.ray):
        for method in args.methods:
            cfg = load_config(overrides=base + method_overrides(method))
            data = load_weak_dataset(cfg.data)
            records = data.records[: args.limit] if args.limit else data.records
            run_dir = args.work / (args.data_dir.name + (f"_n{args.limit}" if args.limit else "")) / method
            shutil.rmtree(run_dir, ignore_errors=True)
            ctx = StageContext(cfg=cfg, records=tuple(records), classes=data.classes, run_dir=run_dir)
            start = time.time()
            coarse_stage.run(ctx, None, run_dir / "coarse")
            row = {"method": method, "s_per_img": (time.time() - start) / len(records)}
            row["raw"], large = score(ctx, run_dir / "coarse", soft=True)
            if not args.no_crf:
                crf_stage.run(ctx, run_dir / "coarse", run_dir / "coarse_crf")
                row["crf"], _ = score(ctx, run_dir / "coarse_crf", soft=False)
            rows.append(row)
            print(f"  {method}: raw {np.mean(list(row['raw'].values())):.3f} ({row['s_per_img']:.2f} s/img)",
                  file=sys.stderr, flush=True)

    print(f"\n{args.data_dir.name}: mean per-image foreground Jaccard, raw -> + CRF (n = {len(rows[0]['raw'])}; "
          f"large instances n = {len(large)})")
    print(f"| method | all | report half | >= {LARGE_SHARE:.0%} | standard error (all, raw) | s/image (coarse) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        means = {key: subset_means(row[key], large=large) for key in ("raw", "crf") if key in row}
        cells = [" -> ".join(f"{m[subset]:.3f}" for m in means.values()) for subset in ("all", "report", "large")]
        raw = np.array(list(row["raw"].values()))
        print(f"| {row['method']} | " + " | ".join(cells) + f" | {raw.std(ddof=1) / np.sqrt(len(raw)):.3f} "
              f"| {row['s_per_img']:.2f} |")
    print("\nconfig:", dataclasses.asdict(cfg0.coarse))


if __name__ == "__main__":
    main()
