"""Per-stage scores of weak runs as one Markdown table, and each run's last round against its coarse and CRF stages.

    .venv/bin/python benchmarks/weak_table.py runs/grabcut runs/coco_mval

One column per run: mean per-image foreground Jaccard (mIoU in brackets) of every stage in run order, as
`coarse2fine status` reads them (a stage's own scores.json, so unfinished runs show their scored stages); a stage a
run has not scored is "-". The monotone column says whether every stage (coarse, crf, then each round's final CRF) is at
least as good as the one before it, and the last of them is compared with the coarse stage and the CRF stage on the
same images: the mean of the per-image differences with its paired standard error (every stage scores the same
photos, so the paired error is far smaller than each mean's own).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from common import arguments, fail
from pipeline.commands.status import run_status
from pipeline.commands.trained import RunError
from pipeline.metrics import read_per_image


def paired_gain(run_dir: Path, before: str, after: str) -> tuple[float, float, int, int]:
    """(mean per-image gain of `after` over `before`, its paired standard error, photos better, photos worse)."""
    first, second = (read_per_image(run_dir / name) for name in (before, after))
    gain = np.array([second[k] - first[k] for k in sorted(first) if first[k] is not None and second.get(k) is not None])
    se = float(gain.std(ddof=1) / np.sqrt(len(gain))) if len(gain) > 1 else float("nan")
    return float(gain.mean()), se, int((gain > 1e-9).sum()), int((gain < -1e-9).sum())


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories (runs/<name>), one column each")
    paths = {path.name: path for path in parser.parse_args().runs}
    try:
        runs = {name: {r["name"]: r for r in run_status(path)["stages"] if r.get("fg_jaccard") is not None}
                for name, path in paths.items()}
    except RunError as err:
        fail(str(err))
    names = list(dict.fromkeys(n for rows in runs.values() for n in rows))
    print("| stage | " + " | ".join(runs) + " |")
    print("|---|" + "---|" * len(runs))
    for name in names:
        cells = []
        for rows in runs.values():
            r = rows.get(name)
            cells.append("-" if r is None else f"{r['fg_jaccard']:.3f} ({r['miou']:.3f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for run, rows in runs.items():
        chain = [rows[n]["fg_jaccard"] for n in rows if n in ("coarse", "crf") or n.endswith("/crf")]
        ok = all(b >= a for a, b in zip(chain, chain[1:]))
        print(f"\n{run}: coarse -> crf -> round outputs {' -> '.join(f'{v:.3f}' for v in chain)}: "
              f"{'monotone' if ok else 'NOT monotone'}")
        last = next((n for n in reversed(rows) if n.endswith("/crf")), "crf")
        for before in ("coarse", "crf"):
            if before in rows and last != before:
                gain, se, better, worse = paired_gain(paths[run], before, last)
                t = f"{gain / se:.1f}" if se > 0 else "-"  # nan or 0 (one photo, or identical stages) has no t
                print(f"  {last} - {before}: {gain:+.4f}, paired standard error {se:.4f} (t = {t}); "
                      f"{better} photos better, {worse} worse")
    return 0


if __name__ == "__main__":
    sys.exit(main())
