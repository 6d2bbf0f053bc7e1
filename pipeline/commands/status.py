"""Where a weak-supervision run stands: every stage folder done / partial / missing, with its scores so far.

    print(format_status(run_status(Path("runs/demo"))))

Stages, in run order: coarse, crf, then round{k}/train, round{k}/predict, round{k}/crf (and round{k}/holdout, the
network on the held-out photos, with data.holdout) for k = 1 .. max(the run config's rounds.count, the highest round
folder on disk). A stage is
    done     its DONE marker exists (the runner writes it last)
    partial  the folder exists without DONE: "N of M images written" counts `<stem>.png` files (per-image stages),
             a train stage reports its last logged iteration of train.iterations (from log.csv)
    missing  no folder
Scores come from the stage's own `scores.json` (written by the runner as soon as the stage is scored), else from
the row of the run's `scores.json` (written at the end of a run). Reading status never changes the run.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

from pipeline.io import read_json
from pipeline.stage import holdout_stage, stage_done
from pipeline.commands.trained import RunError, read_run

SCORE_KEYS = ("fg_jaccard", "miou", "pixel_acc", "scored")


def _planned(run_dir: Path, rounds: int, holdout: bool) -> list[str]:
    on_disk = [int(m.group(1)) for d in run_dir.glob("round*") if (m := re.fullmatch(r"round(\d+)", d.name))]
    last = max([rounds, *on_disk])
    names = ["coarse", "crf"]
    for k in range(1, last + 1):
        names += [f"round{k}/train", f"round{k}/predict", f"round{k}/crf"] + ([holdout_stage(k)] if holdout else [])
    return names


def _read_scores(path: Path) -> dict | None:
    try:
        data = read_json(path)
    except (OSError, ValueError):  # missing, or being rewritten by a live run: no scores yet
        return None
    return data if isinstance(data, dict) else None


def _last_iteration(log: Path) -> int:
    try:
        with open(log, newline="") as f:
            rows = list(csv.DictReader(f))
        return int(rows[-1]["iteration"]) if rows else 0
    except (OSError, KeyError, ValueError):
        return 0


def run_status(run_dir: Path) -> dict:
    """{"run", "dir", "classes", "images", "skipped", "stages": [{"name", "state", "written", "expected", ...}]}."""
    run_dir = Path(run_dir)
    cfg, classes, raw = read_run(run_dir)
    try:
        expected = int(raw.get("images", 0))
        held_out = int(raw.get("holdout_images", 0))
    except (TypeError, ValueError):
        raise RunError(f"{run_dir / 'run.json'}: 'images' and 'holdout_images' must be numbers") from None
    overall = _read_scores(run_dir / "scores.json") or {}
    rows_by_name = {r.get("name"): r for r in overall.get("stages", []) if isinstance(r, dict)}
    stages = []
    for name in _planned(run_dir, cfg.rounds.count, bool(cfg.data.holdout)):
        d = run_dir / name
        is_train = name.endswith("/train")
        state = "done" if stage_done(d) else "partial" if d.is_dir() else "missing"
        row: dict = {"name": name, "state": state}
        if is_train:
            row.update(unit="iterations", expected=cfg.train.iterations,
                       written=cfg.train.iterations if state == "done" else _last_iteration(d / "log.csv"))
        else:
            row.update(unit="images", expected=held_out if name.endswith("/holdout") else expected,
                       written=sum(1 for p in d.glob("*.png") if not p.name.startswith(".")) if d.is_dir() else 0)
        scores = _read_scores(d / "scores.json") or rows_by_name.get(name) or {}
        row.update({k: scores.get(k) for k in SCORE_KEYS})
        stages.append(row)
    return {"run": run_dir.name, "dir": str(run_dir), "classes": list(classes), "images": expected,
            "holdout_images": held_out,
            "skipped": len(raw.get("skipped") or []), "rounds": cfg.rounds.count, "stages": stages}


def format_status(status: dict) -> str:
    """A table for the terminal: one line per stage with its state, progress and scores."""
    def num(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"

    head = (f"run {status['run']} ({status['dir']}): {status['images']} images, {len(status['classes']) - 1} classes, "
            f"{status['rounds']} rounds" + (f", {status['holdout_images']} held out" if status.get("holdout_images")
                                            else "")
            + (f", {status['skipped']} inputs skipped" if status["skipped"] else ""))
    lines = [head, f"{'stage':<16}{'state':<9}{'progress':>22}{'fg Jaccard':>12}{'mIoU':>8}"]
    for s in status["stages"]:
        progress = f"{s['written']} of {s['expected']} {s['unit']}" if s["state"] != "missing" else "-"
        lines.append(f"{s['name']:<16}{s['state']:<9}{progress:>22}{num(s['fg_jaccard']):>12}{num(s['miou']):>8}")
    done = sum(s["state"] == "done" for s in status["stages"])
    lines.append(f"{done} of {len(status['stages'])} stages done")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m pipeline.commands.status runs/demo
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m pipeline.commands.status RUN_DIR")
    try:
        print(format_status(run_status(Path(sys.argv[1]))))
    except RunError as err:
        sys.exit(str(err))
