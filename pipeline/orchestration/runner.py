"""The weak-supervision run: coarse -> crf -> [train -> predict -> crf] x rounds, every stage scored.

    from stages import WEAK_STAGES
    scores = run_pipeline(load_config("configs/demo.yaml"), WEAK_STAGES)   # CLI: coarse2fine run --config ...

The runner knows the order of the stages, not their code: the caller hands it the stage functions (`StageFunctions`;
`stages.WEAK_STAGES` holds the package's own), so the library never imports `stages/`.

Run directory `<run.root>/<run.name>/`:
    run.json                      resolved config, class list, image count, skipped inputs ("<file>: <reason>")
    images_checked.sqlite         the images that decoded at load time (size, mtime): a rerun decodes only new ones
    records.sqlite                the records (stem, image, label, ground truth), read lazily by every stage
    coarse/  crf/                 per-image <stem>.npz + <stem>.png, manifest.json, DONE, scores.json
    round<k>/train/               model.pt (+ last.pt, log.csv), manifest.json, DONE
    round<k>/predict/  round<k>/crf/
    round<k>/holdout/             with data.holdout: round k's network on the held-out photos (stages/holdout.py),
                                  scored; holdout_records.sqlite holds those photos (pipeline/data/holdout.py)
    scores.json                   one row per scored stage (the table printed at the end); each stage folder's
                                  scores.json and per_image.csv hold its own scores (stages/evaluate.py)
    full_reference/  compare/     only after `coarse2fine compare` (pipeline/orchestration/reference_run.py): the
    holdout/coarse/  holdout/crf/ network trained on the ground truth, the pipeline applied to the held-out photos,
                                  the scores (stages/reference.py, stages/compare.py)

Each stage's `manifest.json` records a hash chained from its inputs: the hash of the upstream stage plus every
config value the stage depends on, read from the config fields' metadata (`Config.keys_feeding`). A stage is skipped
when its DONE marker holds the same hash (`pipeline.stage.stage_done`); a folder with a different hash is deleted and
recomputed, and so is everything after it, because their hashes change too. DONE is written last, after the stage
returned, so a killed run never counts a half-written stage as finished; inside a stage, images whose `.png` exists
are not redone (per-image resume). `start_from` deletes the named stage and everything after it first.

Held-out photos (`data.holdout`) enter no step but those whose `Step.on` is "holdout": the rounds' `holdout` steps
(and the direct pipeline of `coarse2fine compare`).

Rounds stop early when the share of pixels whose pseudo-label changed from the previous round falls below
`rounds.min_change` (the change is recorded in scores.json, so a rerun stops at the same round).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from pipeline.config import Config, ConfigError
from pipeline.data.demo import ensure_demo
from pipeline.data.holdout import load_run_data
from pipeline.io import atomic_write_bytes, load_mask, read_json, write_json
from pipeline.metrics import PER_IMAGE_FILE
from pipeline.orchestration.parallel import ray_session
from pipeline.stage import StageContext, holdout_stage, stage_done, training_labels

StageFn = Callable[[StageContext, "Path | None", Path], dict]


@dataclass(frozen=True)
class StageFunctions:
    """What a weak run calls: each stage's `run(ctx, src, dst) -> summary`, and `evaluate(ctx, src, dst) -> scores`;
    `holdout` scores the rounds' networks on held-out photos (None: that caller cannot hold photos out);
    `reference` and `compare` are the steps `run_reference` adds (None: that caller cannot compare)."""

    coarse: StageFn
    crf: StageFn
    train: StageFn
    predict: StageFn
    evaluate: StageFn
    holdout: StageFn | None = None
    reference: StageFn | None = None
    compare: StageFn | None = None


@dataclass(frozen=True)
class Step:
    name: str  # folder below the run directory, also the stage's name in tables: "crf", "round2/predict"
    kind: str  # coarse, crf, train, predict, holdout, reference or compare: the StageFunctions field computing it
    src: str | None  # folder of the input stage
    round: int  # 0 before the rounds
    scored: bool  # produces per-image soft maps to score
    reads: tuple[str, ...] = ()  # folders of other stages it reads besides src (their hashes are chained in too)
    on: str = "train"  # the photos it runs on: "train" (the run's records) or "holdout" (StageContext.holdout)


def plan(cfg: Config) -> list[Step]:
    """Every step of the run in order (with `data.holdout`, each round ends with its network on the held-out
    photos)."""
    steps = [Step("coarse", "coarse", None, 0, True), Step("crf", "crf", "coarse", 0, True)]
    for k in range(1, cfg.rounds.count + 1):
        r = f"round{k}"
        steps += [Step(f"{r}/train", "train", training_labels(k), k, False),
                  Step(f"{r}/predict", "predict", f"{r}/train", k, True),
                  Step(f"{r}/crf", "crf", f"{r}/predict", k, True)]
        if cfg.data.holdout:
            steps.append(Step(holdout_stage(k), "holdout", f"{r}/train", k, True, on="holdout"))
    return steps


def step_context(ctx: StageContext, step: Step) -> StageContext:
    """The context `step` runs in: its round, and the held-out photos as its records when it runs on them."""
    ctx = dataclasses.replace(ctx, round=step.round)
    return dataclasses.replace(ctx, records=ctx.holdout) if step.on == "holdout" else ctx


def step_config(cfg: Config, step: Step) -> Config:
    """The config `step` runs with: `crf` replaced by the CRF of the step's round (Config.crf_for_round)."""
    crf_cfg = cfg.crf_for_round(step.round)
    return cfg if crf_cfg == cfg.crf else dataclasses.replace(cfg, crf=crf_cfg)


def stage_keys(cfg: Config, step: Step) -> dict:
    """The config values `step`'s output depends on (see Config.keys_feeding)."""
    return step_config(cfg, step).keys_feeding(step.kind, step.round)


def step_hashes(cfg: Config, steps: list[Step], done: dict[str, str] | None = None) -> dict[str, str]:
    """Hash of every step: its name, its config keys and its inputs' hashes (`done`: those of finished steps that
    are not in `steps`)."""
    hashes: dict[str, str] = dict(done or {})
    for s in steps:
        key = {"step": s.name, "keys": stage_keys(cfg, s), "input": hashes.get(s.src or "")}
        if s.reads:  # only then: the hashes of the weak run's steps stay what they were
            key["reads"] = [hashes.get(r) for r in s.reads]
        blob = json.dumps(key, sort_keys=True, default=list)
        hashes[s.name] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return hashes


def resolve_from(name: str, steps: list[Step]) -> int:
    """Index of the step `--from NAME` names: a step name, `roundK` (its train step), `train`/`predict` (round 1)."""
    aliases = {"train": "round1/train", "predict": "round1/predict"}
    name = aliases.get(name, name)
    if name.startswith("round") and "/" not in name:
        name += "/train"
    for i, s in enumerate(steps):
        if s.name == name:
            return i
    raise ConfigError(f"--from {name!r}: no such stage (choose from {', '.join(s.name for s in steps)})")


def _remove(path: Path) -> None:
    """Delete a stage folder: rename first (atomic), so a crash mid-delete never leaves a half folder in place."""
    if path.exists():
        trash = path.with_name(f".{path.name}.deleting")
        shutil.rmtree(trash, ignore_errors=True)
        path.rename(trash)
        shutil.rmtree(trash)


def run_step(step: Step, run: StageFn, ctx: StageContext, digest: str) -> tuple[dict, bool]:
    """Run one step unless it is done with the same hash; returns (its summary, whether it was already done)."""
    dst = ctx.run_dir / step.name
    manifest_path = dst / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.is_file() else {}
    if stage_done(dst, digest):
        return manifest.get("summary", {}), True
    if dst.exists() and manifest.get("hash") != digest:
        _remove(dst)  # made with other inputs or settings (or never started properly)
    dst.mkdir(parents=True, exist_ok=True)
    manifest = {"stage": step.name, "hash": digest, "input": step.src, "round": step.round,
                "config": stage_keys(ctx.cfg, step), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json(manifest_path, manifest)
    print(f"[{step.name}] running", file=sys.stderr, flush=True)
    src = ctx.run_dir / step.src if step.src else None
    summary = run(dataclasses.replace(step_context(ctx, step), cfg=step_config(ctx.cfg, step)), src, dst)
    write_json(manifest_path, {**manifest, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "summary": summary})
    atomic_write_bytes(dst / "DONE", f"{digest}\n".encode())  # last: the stage is complete
    return summary, False


def _score_key(cfg: Config, digest: str) -> str:
    """What a stage's scores depend on: its outputs (digest) and the ground-truth keys."""
    return hashlib.sha256(json.dumps([digest, cfg.keys_feeding("score")], sort_keys=True,
                                     default=list).encode()).hexdigest()[:16]


def scores_current(stage_dir: Path, cfg: Config, digest: str) -> bool:
    """The stage's scores.json (and per_image.csv) were made for these outputs and ground-truth keys."""
    path = stage_dir / "scores.json"
    return (path.is_file() and (stage_dir / PER_IMAGE_FILE).is_file()
            and read_json(path).get("key") == _score_key(cfg, digest))


def score_step(step: Step, evaluate: StageFn, ctx: StageContext, digest: str) -> dict:
    """The step's scores, reused from its scores.json when made for the same outputs and scoring keys."""
    dst = ctx.run_dir / step.name
    path = dst / "scores.json"
    if scores_current(dst, ctx.cfg, digest):
        return read_json(path)
    scores = evaluate(step_context(ctx, step), dst, dst)
    scores["key"] = _score_key(ctx.cfg, digest)
    write_json(path, scores)
    return scores


def label_change(run_dir: Path, before: str, after: str, stems: Iterable[str]) -> float:
    """Share of pixels whose pseudo-label differs between two stage folders (ignore counts as a label)."""
    changed = total = 0
    for stem in stems:
        a, b = load_mask(run_dir / before / f"{stem}.png"), load_mask(run_dir / after / f"{stem}.png")
        changed += int((a != b).sum())
        total += a.size
    return changed / max(total, 1)


def format_table(rows: list[dict]) -> str:
    """The score table printed at the end of a run."""
    def f(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else "-" if v is None else str(v)

    lines = [f"{'stage':<16}{'fg Jaccard':>11}{'mIoU':>8}{'pix acc':>9}{'scored':>8}{'seconds':>9}  change"]
    for r in rows:
        lines.append(f"{r['name']:<16}{f(r['fg_jaccard']):>11}{f(r['miou']):>8}{f(r['pixel_acc']):>9}"
                     f"{r['scored']:>8}{r['seconds']:>9.1f}  {f(r.get('label_change'))}")
    return "\n".join(lines)


def report_skipped(skipped: tuple[str, ...] | list[str], where: Path, show: int = 10) -> None:
    """Tell stderr how many inputs `data.on_bad_image: skip` left out, the first `show` of them, and where all are."""
    if not skipped:
        return
    print(f"skipped {len(skipped)} bad input(s) (data.on_bad_image: skip; all listed in {where}):", file=sys.stderr)
    for line in list(skipped)[:show]:
        print(f"  {line}", file=sys.stderr)
    if len(skipped) > show:
        print(f"  ... and {len(skipped) - show} more", file=sys.stderr)
    sys.stderr.flush()


def run_pipeline(cfg: Config, stages: StageFunctions, *, start_from: str | None = None) -> dict:
    """Run (or resume) every step of `cfg`'s weak-supervision run with `stages`; returns the scores.json content."""
    if not cfg.run.name or any(c in cfg.run.name for c in "/\\") or cfg.run.name.startswith("."):
        raise ConfigError(f"config key 'run.name': {cfg.run.name!r} must be a plain folder name")
    if cfg.data.kind == "demo":
        ensure_demo(cfg.data)
    run_dir = Path(cfg.run.root) / cfg.run.name
    dataset, held_out = load_run_data(cfg.data, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    report_skipped(dataset.skipped, run_dir / "run.json")
    write_json(run_dir / "run.json", {"config": cfg.to_dict(), "classes": list(dataset.classes),
                                      "images": len(dataset.records), "skipped": list(dataset.skipped),
                                      **({"holdout_images": len(held_out)} if held_out is not None else {})})
    steps, rows = plan(cfg), []
    if held_out is not None and stages.holdout is None:
        raise ConfigError("config key 'data.holdout': this caller's StageFunctions has no holdout stage")
    hashes = step_hashes(cfg, steps)
    if start_from:
        for s in steps[resolve_from(start_from, steps):]:
            _remove(run_dir / s.name)
    ctx = StageContext(cfg=cfg, records=dataset.records, classes=dataset.classes, run_dir=run_dir,
                       holdout=held_out if held_out is not None else ())
    previous_labels, last_round = "crf", cfg.rounds.count  # last_round: lowered when the labels converge
    finished = all(stage_done(run_dir / s.name, hashes[s.name]) and
                   (not s.scored or scores_current(run_dir / s.name, cfg, hashes[s.name])) for s in steps)
    ray_cfg = dataclasses.replace(cfg.ray, enabled=cfg.ray.enabled and not finished)  # nothing to do: no cluster
    with ray_session(ray_cfg):
        for step in steps:
            if step.round > last_round:
                break
            summary, cached = run_step(step, getattr(stages, step.kind), ctx, hashes[step.name])
            if step.kind == "train":
                print(f"[{step.name}] {'done earlier' if cached else 'done'} in {summary.get('seconds', 0):.1f}s",
                      file=sys.stderr)
            if not step.scored:
                continue
            scores = score_step(step, stages.evaluate, ctx, hashes[step.name])
            row = {"name": step.name, "dir": step.name, "round": step.round, "seconds": summary.get("seconds", 0.0),
                   **{k: scores[k] for k in ("images", "scored", "fg_jaccard", "miou", "pixel_acc",
                                             "per_class_iou")}}
            if step.round and step.name.endswith("/crf"):
                row["label_change"] = round(label_change(run_dir, previous_labels, step.name,
                                                               (r.stem for r in dataset.records)), 5)
                previous_labels = step.name
            rows.append(row)
            print(f"[{step.name}] fg Jaccard {scores['fg_jaccard'] if scores['fg_jaccard'] is not None else '-'}"
                  f"  mIoU {scores['miou'] if scores['miou'] is not None else '-'}", file=sys.stderr, flush=True)
            if (row.get("label_change") is not None and row["label_change"] < cfg.rounds.min_change
                    and step.round < cfg.rounds.count):  # converged before the last round
                print(f"[{step.name}] labels changed on {row['label_change']:.4%} of pixels < rounds.min_change: "
                      "stopping", file=sys.stderr)
                last_round = step.round  # the round's remaining steps (its held-out scores) still run
    result = {"run": cfg.run.name, "classes": list(dataset.classes), "skipped": list(dataset.skipped),
              "stages": rows}
    write_json(run_dir / "scores.json", result)
    print(format_table(rows))
    return result
