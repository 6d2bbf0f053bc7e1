"""Print runs' per-stage scores as a Markdown table (finished or not), e.g. for docs/results_weak.md.

    .venv/bin/python benchmarks/weak_table.py runs/grabcut runs/coco_mval

One column per run: mean per-image foreground Jaccard (mIoU in brackets) of every stage in run order, as
`coarse2fine status` reads them (a stage's own scores.json, so unfinished runs show their scored stages); a stage a
run has not scored is "-". The monotone column says whether every stage (coarse, crf, then each round's final CRF) is at
least as good as the one before it.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.status import run_status  # noqa: E402


def main(run_dirs: list[str]) -> int:
    runs = {Path(d).name: {r["name"]: r for r in run_status(Path(d))["stages"] if r.get("fg_jaccard") is not None}
            for d in run_dirs}
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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
