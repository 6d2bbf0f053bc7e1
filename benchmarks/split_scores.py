"""Per-stage scores of weak runs on a tuning half and a held-out report half of their images.

    .venv/bin/python benchmarks/split_scores.py runs/grabcut_isnet runs/grabcut
    .venv/bin/python benchmarks/split_scores.py runs/coco_mval_isnet --gt ../shared/data/coco_mval_dev/gt --fg 255

Settings are chosen on the tuning half and reported on the other, so a number in docs/results.md says how a
config does on photos it was not tuned on. The halves: the run's image ids sorted, even positions tune, odd
positions report (COCO-MVal's ids start with the class name, so both halves hold every class). Only the scoring
uses ground truth; a run itself never reads it, so both halves can be in one run.

Every stage that has been scored so far is shown (finished runs or not). Columns: mean per-image foreground Jaccard over all images, the tuning half and the report half; with `--gt`, also
the report half's instances covering at least 10 % of the photo (GT pixels equal to `--fg`), where COCO-MVal's
small instances stop dominating the mean.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.commands.status import run_status  # noqa: E402
from pipeline.metrics import read_per_image  # noqa: E402

LARGE = 0.10  # share of the photo an instance must cover to count as large


def halves(stems: list[str]) -> tuple[set[str], set[str]]:
    """(tuning half, report half): sorted ids at even and at odd positions."""
    ordered = sorted(stems)
    return set(ordered[0::2]), set(ordered[1::2])


def large_instances(stems: list[str], gt_dir: Path, fg: int) -> set[str]:
    """Ids whose ground-truth foreground covers at least LARGE of the image."""
    large = set()
    for stem in stems:
        if not (gt_dir / f"{stem}.png").is_file():
            continue  # another data set's run: no large-instance column for it
        gt = np.asarray(Image.open(gt_dir / f"{stem}.png"))
        if (gt == fg).mean() >= LARGE:
            large.add(stem)
    return large


def mean_over(per_image: dict, stems: set[str]) -> tuple[float, int]:
    values = [v for k, v in per_image.items() if k in stems and v is not None]
    return (float(np.mean(values)) if values else float("nan")), len(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (runs/<name>)")
    parser.add_argument("--gt", type=Path, help="ground-truth folder, for the large-instance column")
    parser.add_argument("--fg", type=int, default=255, help="foreground value in the ground truth")
    args = parser.parse_args()
    for run_dir in args.runs:
        stages = [{"name": row["name"], "per_image": read_per_image(run_dir / row["name"])}
                  for row in run_status(run_dir)["stages"] if row.get("fg_jaccard") is not None]
        if not stages:
            print(f"{run_dir}: no scored stage yet")
            continue
        stems = sorted(stages[0]["per_image"])
        tune, report = halves(stems)
        large = large_instances(stems, args.gt, args.fg) & report if args.gt else set()
        print(f"\n{run_dir.name}: {len(stems)} images, tune {len(tune)}, report {len(report)}"
              + (f", report large {len(large)}" if args.gt else ""))
        header = f"{'stage':<16}{'all':>8}{'tune':>8}{'report':>8}" + (f"{'rep >=10%':>11}" if args.gt else "")
        print(header)
        for row in stages:
            cells = [mean_over(row["per_image"], s)[0] for s in (set(stems), tune, report)]
            if args.gt:
                cells.append(mean_over(row["per_image"], large)[0])
            print(f"{row['name']:<16}" + "".join(f"{c:>8.4f}" for c in cells[:3])
                  + (f"{cells[3]:>11.4f}" if args.gt else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
