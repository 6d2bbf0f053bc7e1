"""Per-stage scores of weak runs on all images, the tuning half and the held-out report half: prints one table a run.

    .venv/bin/python benchmarks/split_scores.py runs/grabcut_isnet runs/grabcut
    .venv/bin/python benchmarks/split_scores.py runs/coco_mval_isnet --gt ../shared/data/coco_mval_dev/gt --fg 255

Settings are chosen on the tuning half and reported on the other, so a reported number says how a config does on
photos it was not tuned on (halves: `common.halves`). Only the scoring uses ground truth; a run itself never reads
it, so both halves can be in one run. Every stage scored so far is shown (finished runs or not). Columns: mean
per-image foreground Jaccard over all images, the tuning half and the report half; with `--gt`, also the report
half's large instances (GT pixels equal to `--fg` cover at least `common.LARGE_SHARE` of the photo).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from common import LARGE_SHARE, arguments, fail, foreground_share, halves, require, subset_means
from pipeline.commands.status import run_status
from pipeline.commands.trained import RunError
from pipeline.metrics import read_per_image


def large_instances(stems: list[str], gt_dir: Path, fg: int) -> set[str]:
    """Ids whose ground-truth foreground (pixels equal to `fg`) covers at least LARGE_SHARE of the image."""
    large = set()
    for stem in stems:
        path = gt_dir / f"{stem}.png"
        if path.is_file() and foreground_share(np.asarray(Image.open(path)) == fg) >= LARGE_SHARE:
            large.add(stem)  # a stem without a file here is another data set's: no large-instance column for it
    return large


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (runs/<name>)")
    parser.add_argument("--gt", type=Path, help="ground-truth folder (None: no large-instance column)")
    parser.add_argument("--fg", type=int, default=255, help="foreground value in the ground truth")
    args = parser.parse_args()
    if args.gt:
        require(args.gt, "--gt: a folder of ground-truth <stem>.png")
    for run_dir in args.runs:
        try:
            rows = run_status(run_dir)["stages"]
        except RunError as err:
            fail(str(err))
        stages = {row["name"]: read_per_image(run_dir / row["name"])
                  for row in rows if row.get("fg_jaccard") is not None}
        if not stages:
            print(f"{run_dir}: no scored stage yet")
            continue
        stems = sorted(next(iter(stages.values())))
        split = halves(stems)  # the first stage's images: every later stage is scored on the same halves
        large = large_instances(stems, args.gt, args.fg) if args.gt else None
        print(f"\n{run_dir.name}: {len(stems)} images, tune {len(split[0])}, report {len(split[1])}"
              + (f", report large {len(large & split[1])}" if args.gt else ""))
        columns = ["all", "tune", "report"] + (["report large"] if args.gt else [])
        print(f"{'stage':<16}" + "".join(f"{c:>14}" for c in columns))
        for name, per_image in stages.items():
            means = subset_means(per_image, split, large)
            print(f"{name:<16}" + "".join(f"{means[c]:>14.4f}" for c in columns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
