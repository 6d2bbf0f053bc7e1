"""The steps `coarse2fine compare` adds to a finished weak run: the references the weak network is measured against.

    summary = run_reference(load_config("configs/demo.yaml"), WEAK_STAGES)   # CLI: coarse2fine compare --config ...

Steps, each run by `pipeline.orchestration.runner.run_step` (hash, manifest.json, DONE, per-image resume):
    holdout/coarse, holdout/crf   with data.holdout only: the pipeline applied to the held-out photos directly
                                  (stages/coarse.py, stages/crf.py on them; no network): what a user gets by labelling
                                  new photos instead of training. Both are scored (stages/evaluate.py).
    full_reference                the same network trained on the ground truth of the training photos
                                  (stages/reference.py)
    compare                       the last round's weak network and the reference scored alike on the training
                                  photos and on the held-out ones, beside the direct pipeline (stages/compare.py)
The weak run is not rerun: its last finished round is taken as it is on disk, and the compare step's hash chains
that round's DONE marker.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from pipeline.commands.trained import RunError, finished_rounds, read_run
from pipeline.config import Config
from pipeline.data.demo import ensure_demo
from pipeline.data.holdout import load_run_data
from pipeline.orchestration.parallel import ray_session
from pipeline.orchestration.runner import (StageFunctions, Step, run_step, score_step, scores_current,
                                           step_hashes)
from pipeline.stage import COMPARE, FULL_REFERENCE, HOLDOUT_COARSE, HOLDOUT_CRF, StageContext, stage_done


def reference_steps(weak_round: int, holdout: bool = False) -> list[Step]:
    """The steps `coarse2fine compare` adds to a weak run whose last finished round is `weak_round` (`holdout`: the
    run holds photos out, so the direct pipeline on them comes first)."""
    direct = [Step(HOLDOUT_COARSE, "coarse", None, 0, True, on="holdout"),
              Step(HOLDOUT_CRF, "crf", HOLDOUT_COARSE, 0, True, on="holdout")] if holdout else []
    return direct + [Step(FULL_REFERENCE, "reference", None, 0, False),
                     Step(COMPARE, "compare", f"round{weak_round}/train", weak_round, False,
                          reads=(FULL_REFERENCE,) + ((HOLDOUT_CRF,) if holdout else ()))]


def run_reference(cfg: Config, stages: StageFunctions) -> dict:
    """Run (or reuse) `reference_steps` for `cfg`'s finished weak run; returns the compare step's summary."""
    if stages.reference is None or stages.compare is None:
        raise ValueError("run_reference: StageFunctions.reference and .compare are needed")
    run_dir = Path(cfg.run.root) / cfg.run.name
    if not (run_dir / "scores.json").is_file():
        raise RunError(f"{run_dir / 'scores.json'}: not found: run `coarse2fine run` first")
    run_classes, rounds = read_run(run_dir)[1], finished_rounds(run_dir)
    if not rounds:
        raise RunError(f"{run_dir}: no finished training round (no round<k>/train/DONE; rounds.count="
                       f"{cfg.rounds.count}): run `coarse2fine run` with rounds.count >= 1 first")
    if cfg.data.kind == "demo":
        ensure_demo(cfg.data)
    dataset, held_out = load_run_data(cfg.data, run_dir, tables=False)  # the run's decode cache, temporary tables
    if tuple(dataset.classes) != run_classes:
        raise RunError(f"{run_dir / 'run.json'}: classes {list(run_classes)} differ from the data set's "
                       f"{list(dataset.classes)} ({cfg.data.root})")
    steps = reference_steps(rounds[-1], holdout=held_out is not None)
    weak = steps[-1].src
    hashes = step_hashes(cfg, steps, {weak: (run_dir / weak / "DONE").read_text().strip()})
    ctx = StageContext(cfg=cfg, records=dataset.records, classes=dataset.classes, run_dir=run_dir,
                       holdout=held_out if held_out is not None else ())
    direct = [s for s in steps if s.on == "holdout"]
    pending = any(not stage_done(run_dir / s.name, hashes[s.name])
                  or not scores_current(run_dir / s.name, cfg, hashes[s.name]) for s in direct)
    summary: dict = {}
    with ray_session(dataclasses.replace(cfg.ray, enabled=cfg.ray.enabled and pending)):  # the direct pipeline's
        for step in steps:
            summary, cached = run_step(step, getattr(stages, step.kind), ctx, hashes[step.name])
            if step.scored:
                score_step(step, stages.evaluate, ctx, hashes[step.name])
            print(f"[{step.name}] {'done earlier' if cached else 'done'}", file=sys.stderr)
    return summary
