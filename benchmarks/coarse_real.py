"""Score the coarse methods on real photos: mean per-image foreground Jaccard, raw and after the dense CRF.

    .venv/bin/python benchmarks/coarse_real.py ../shared/data/grabcut
    .venv/bin/python benchmarks/coarse_real.py ../shared/data/coco_mval_dev --methods saliency ddt fusion --limit 100

The data layout is inferred from the folder name: `grabcut` (class-agnostic, 128 = ignore band) or COCO-MVal (label =
the class name before the two-digit index in the file name, `^(.*?)\\d\\d_`); both have `img/` and `gt/` with 255 =
foreground. Each method runs through the real stage (`stages/coarse.py`, Ray with 2 CPUs by default) into a scratch
run folder, then `stages/crf.py` refines it. Scoring (as for the simple baselines of docs/results.md): a pixel is foreground when the
foreground probability in `<stem>.npz` is >= 0.5 (raw) or when the CRF's arg-max is the image's class (+CRF); GT
pixels in the ignore band are not scored. COCO-MVal is also scored on the subset whose instance covers >= 10 % of
the image. Nothing here is used by tests; the data is read in place and never copied.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_config  # noqa: E402
from pipeline.io import load_mask, load_probs  # noqa: E402
from pipeline.metrics import foreground_jaccard  # noqa: E402
from pipeline.orchestration.parallel import ray_session  # noqa: E402
from pipeline.stage import StageContext  # noqa: E402
from pipeline.data.weak import load_ground_truth, load_weak_dataset  # noqa: E402
from stages import coarse as coarse_stage  # noqa: E402
from stages import crf as crf_stage  # noqa: E402

METHODS = ("saliency", "ddt", "ddt_image", "cam", "fusion")  # ddt_image = ddt with coarse.ddt_groups=image
BIG_SHARE = 0.10  # COCO-MVal subset: instances covering at least this share of the image


def data_overrides(data_dir: Path) -> list[str]:
    common = [f"data.root={data_dir}", "data.images=img", "data.masks=gt", "data.labels=''", "data.classes=''",
              "data.gt_foreground_value=255"]
    if "grabcut" in data_dir.name.lower():
        return common + ["data.class_agnostic=true", "data.gt_ignore_values=[128]"]
    return common + ["data.label_pattern='^(.*?)\\d\\d_'", "data.gt_ignore_values=[]"]


def method_overrides(method: str) -> list[str]:
    if method == "ddt_image":
        return ["coarse.method=ddt", "coarse.ddt_groups=image"]
    return [f"coarse.method={method}"]


def score(ctx: StageContext, folder: Path, soft: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-image foreground Jaccard and GT foreground share for every record with ground truth."""
    scores, shares = [], []
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
        scores.append(foreground_jaccard(pred, gt == r.label, valid))
        shares.append(float((gt == r.label).sum() / max(valid.sum(), 1)))
    return np.array(scores), np.array(shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", type=Path, help="grabcut or coco_mval_dev folder (img/ + gt/)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--limit", type=int, default=0, help="use the first N images only (0 = all)")
    parser.add_argument("--no-crf", action="store_true", help="score raw maps only")
    parser.add_argument("--work", type=Path, default=Path("/tmp/coarse_real"), help="scratch run folder")
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides, e.g. coarse.image_side=320")
    parser.add_argument("--cpus", type=int, default=2, help="local Ray cluster size")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    base = data_overrides(args.data_dir.resolve()) + [f"ray.num_cpus={args.cpus}"] + list(args.set)
    rows = []
    cfg0 = load_config(overrides=base)
    with ray_session(cfg0.ray):
        for method in args.methods:
            cfg = load_config(overrides=base + method_overrides(method))
            data = load_weak_dataset(cfg.data)
            records = data.records[: args.limit] if args.limit else data.records
            tag = args.data_dir.name + ("" if not args.limit else f"_n{args.limit}")
            run_dir = args.work / tag / method
            shutil.rmtree(run_dir, ignore_errors=True)
            ctx = StageContext(cfg=cfg, records=tuple(records), classes=data.classes, run_dir=run_dir)
            start = time.time()
            coarse_stage.run(ctx, None, run_dir / "coarse")
            seconds = time.time() - start
            raw, shares = score(ctx, run_dir / "coarse", soft=True)
            row = {"method": method, "n": len(raw), "raw": raw, "shares": shares, "s_per_img": seconds / len(records)}
            if not args.no_crf:
                crf_stage.run(ctx, run_dir / "coarse", run_dir / "coarse_crf")
                row["crf"], _ = score(ctx, run_dir / "coarse_crf", soft=False)
            rows.append(row)
            print(f"  {method}: raw {raw.mean():.3f}" + (f" crf {row['crf'].mean():.3f}" if "crf" in row else "")
                  + f" ({seconds / len(records):.2f} s/img)", file=sys.stderr, flush=True)

    big = rows[0]["shares"] >= BIG_SHARE
    print(f"\n{args.data_dir.name}: mean per-image foreground Jaccard, raw -> + CRF "
          f"(n = {rows[0]['n']}; >= {BIG_SHARE:.0%} subset n = {int(big.sum())})")
    print(f"| method | all | >= {BIG_SHARE:.0%} | standard error (all, raw) | s/image (coarse) |")
    print("|---|---|---|---|---|")
    for row in rows:
        def cell(mask):
            text = f"{row['raw'][mask].mean():.3f}"
            return text + (f" -> {row['crf'][mask].mean():.3f}" if "crf" in row else "")
        sem = row["raw"].std(ddof=1) / np.sqrt(len(row["raw"]))
        print(f"| {row['method']} | {cell(slice(None))} | {cell(big) if big.any() else '-'} | {sem:.3f} "
              f"| {row['s_per_img']:.2f} |")
    print("\nconfig:", {k: v for k, v in dataclasses.asdict(cfg0.coarse).items()})


if __name__ == "__main__":
    main()
