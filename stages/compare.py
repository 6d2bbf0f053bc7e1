"""Stage `compare`: the last round's weak network scored beside the full reference, on the same photos.

    summary = run(ctx, run_dir / "round2" / "train", run_dir / "compare")   # ctx.round == 2; runner.run_reference

Loads the weak network src/model.pt as the run made it (pipeline.commands.trained.load_run_model: the run's own
run.json config), scores it exactly as the reference was scored (pipeline.learn.supervised.score_on_ground_truth:
the photos with ground truth, whole image, one scale, no flip) and writes dst/weak_metrics.json, with the reference's
scores (full_reference/metrics.json, stages/reference.py) copied beside it as dst/full_metrics.json: the two files
the weak-vs-full report (pipeline.commands.report.compare_report) renders. Runs in this process, without Ray.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.commands.trained import load_run_model
from pipeline.io import read_json, write_json
from pipeline.learn.engine import resolve_device
from pipeline.learn.supervised import score_on_ground_truth
from pipeline.stage import FULL_REFERENCE, StageContext


def run(ctx: StageContext, src: Path, dst: Path) -> dict:
    """Score round ctx.round's network (in `src`) on the photos with ground truth; returns both mIoUs."""
    dst = Path(dst)
    model, _, _ = load_run_model(ctx.run_dir, round=ctx.round)
    records = [r for r in ctx.records if r.gt is not None]
    device = str(resolve_device("auto"))
    weak = {**score_on_ground_truth(model, records, ctx.cfg, ctx.classes, device),
            "weights": str(Path(src) / "model.pt")}
    full = read_json(ctx.run_dir / FULL_REFERENCE / "metrics.json")
    write_json(dst / "weak_metrics.json", weak)
    write_json(dst / "full_metrics.json", full)
    return {"round": ctx.round, "weak_miou": weak["miou"], "full_miou": full["miou"]}
