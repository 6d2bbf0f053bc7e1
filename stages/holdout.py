"""Stage `holdout`: round k's network predicts the held-out photos (data.holdout), the photos no training stage saw.

    summary = run(ctx, src=run_dir / "round1" / "train", dst=run_dir / "round1" / "holdout")   # ctx.records: held out

The predict stage's code path (stages/predict.py: the same sharded pass, `test_time.scales` and `test_time.flip`,
per-image resume) with its step 1 only: the soft map keeps background and the photo's image-level label (a
`rounds.foreground_network` network's foreground is named by the label, as in training; a class-agnostic run's
label is its one class), and from round `rounds.keep_other_classes_from` on the other classes the network finds.
Steps 2 and 3 (`rounds.reset_iou`, `rounds.ensemble`) are left out: they read the photo's coarse map and earlier
rounds' maps, which held-out photos do not have, and what is measured is the round's network alone. The runner scores
the folder like every stage (stages/evaluate.py) as the row `round<k>/holdout`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.stage import StageContext
from stages import predict


def run(ctx: StageContext, src: Path, dst: Path) -> dict:
    """Predict every pending held-out record (`ctx.records`) with `src/model.pt` into `dst`; predict.run's summary."""
    rounds = dataclasses.replace(ctx.cfg.rounds, reset_iou=0.0, ensemble=False)
    return predict.run(dataclasses.replace(ctx, cfg=dataclasses.replace(ctx.cfg, rounds=rounds)), src, dst)
