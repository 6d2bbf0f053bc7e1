"""Stage `compare`: the last round's weak network scored beside the full reference, on the training photos and on the
held-out ones.

    summary = run(ctx, run_dir / "round2" / "train", run_dir / "compare")   # ctx.round == 2; reference_run.py

Loads the weak network src/model.pt as the run made it (pipeline.commands.trained.load_run_model: the run's own
run.json config), scores it exactly as the reference was scored (pipeline.learn.supervised.score_on_ground_truth:
the photos with ground truth, whole image, one scale, no flip) and writes dst/weak_metrics.json, with the reference's
scores (full_reference/metrics.json, stages/reference.py) copied beside it as dst/full_metrics.json: the two files
the weak-vs-full report (pipeline.commands.report.compare_report) renders.

With held-out photos (data.holdout, `ctx.holdout`) it also writes dst/holdout_metrics.json: {"images", "weak",
"full", "pipeline"}: the weak network and the reference (full_reference/model.pt) scored alike on the held-out
photos, and the pipeline applied to them directly (the scores of holdout/crf, stages/evaluate.py: in the data set's
classes, every label restricted to the photo's own as in the weak run's stages). Runs in this process, without Ray.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.commands.trained import load_run_model
from pipeline.io import read_json, write_json
from pipeline.learn.engine import resolve_device
from pipeline.learn.supervised import score_on_ground_truth, trained_model
from pipeline.stage import FULL_REFERENCE, HOLDOUT_CRF, HOLDOUT_METRICS, StageContext, network_outputs


def run(ctx: StageContext, src: Path, dst: Path) -> dict:
    """Score round ctx.round's network (in `src`) on the photos with ground truth; returns both mIoUs (and, with
    held-out photos, the three held-out foreground Jaccards)."""
    dst = Path(dst)
    model, _, _ = load_run_model(ctx.run_dir, round=ctx.round)
    records = [r for r in ctx.records if r.gt is not None]
    device = str(resolve_device("auto"))
    weak = {**score_on_ground_truth(model, records, ctx.cfg, ctx.classes, device),
            "weights": str(Path(src) / "model.pt")}
    full = read_json(ctx.run_dir / FULL_REFERENCE / "metrics.json")
    write_json(dst / "weak_metrics.json", weak)
    write_json(dst / "full_metrics.json", full)
    summary = {"round": ctx.round, "weak_miou": weak["miou"], "full_miou": full["miou"]}
    held = [r for r in ctx.holdout if r.gt is not None]
    if not ctx.holdout:
        return summary
    full_model, _ = trained_model(ctx.cfg, network_outputs(ctx.cfg, len(ctx.classes)),
                                  ctx.run_dir / FULL_REFERENCE, device)
    pipeline = read_json(ctx.run_dir / HOLDOUT_CRF / "scores.json")
    holdout = {"images": len(held),  # those with ground truth; none: nothing to score the networks on
               "weak": score_on_ground_truth(model, held, ctx.cfg, ctx.classes, device) if held else {},
               "full": score_on_ground_truth(full_model, held, ctx.cfg, ctx.classes, device) if held else {},
               "pipeline": {k: pipeline.get(k) for k in ("scored", "fg_jaccard", "miou", "pixel_acc",
                                                         "per_class_iou")}}
    write_json(dst / HOLDOUT_METRICS, holdout)
    return {**summary, **{f"holdout_{name}_fg_jaccard": holdout[name].get("fg_jaccard")
                          for name in ("weak", "full", "pipeline")}}
