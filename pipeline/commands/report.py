"""Weak-vs-full report: an HTML page with plots and a best/worst gallery for one weak-supervision run.

    path = compare_runs(load_config("configs/demo.yaml"), full_iterations=300)   # runs/demo/compare/report.html
    path = write_report(Path("runs/demo"), Path("runs/demo/compare"), full_metrics=None)   # weak run only

`compare_runs` needs a finished weak run (`coarse2fine run`, which writes runs/<name>/scores.json). It then
1. trains a FULLY SUPERVISED network on the same images with their ground-truth masks (`network_truth`: the data
   set's classes, or foreground = the image's label for a `rounds.foreground_network` run, as the weak network
   learns them), same `model:` and `train:` sections (`full_iterations` replaces train.iterations), seed
   run.seed, into runs/<name>/full_reference/ (model.pt, last.pt, log.csv, manifest.json, DONE). A killed training
   resumes from last.pt; a finished one is reused; a changed config (hash in manifest.json) retrains from scratch;
2. scores the last round's weak network (pipeline.commands.trained.load_run_model) and the full one on the same
   images (whole image, one scale, no flip): mIoU, per-class IoU, pixel accuracy and the mean per-image foreground
   Jaccard of each image's label; writes runs/<name>/full_reference/metrics.json and
   runs/<name>/compare/weak_metrics.json;
3. writes runs/<name>/compare/report.html with write_report.
Both networks saw these images in training (the weak one with pseudo-labels), so the full score is the upper bound
of the weak pipeline on its own images, not a held-out score. Runs in this process (GPU when present), no Ray.

`write_report` writes out_dir/report.html (self-contained: inline CSS, no scripts, relative links only) and PNGs
beside it: stages.png (fg Jaccard and mIoU per stage and round, from scores.json), per_class.png and
weak_vs_full.png (only with `full_metrics`; the weak side is `weak_metrics` if given, else the final stage's scores),
and gallery_best_<i>.png / gallery_worst_<i>.png: image | ground truth | coarse | CRF | final stage for the
`gallery` best and worst images by the final stage's per-image foreground Jaccard.
"""
from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.commands import report_plots as plots
from pipeline.config import Config
from pipeline.data.demo import ensure_demo
from pipeline.learn.engine import resolve_device, train_model
from pipeline.commands.gallery import caption, write_gallery
from pipeline.learn.inference import predict_probs
from pipeline.io import IGNORE, atomic_write_bytes, load_mask, read_image, read_json, write_json
from pipeline.metrics import confusion_matrix, foreground_jaccard, read_per_image, scores_from_confusion
from pipeline.models import build_model
from pipeline.commands.predict_images import colorize
from pipeline.stage import Record, network_classes, network_outputs, stage_done
from pipeline.commands.trained import RunError, finished_rounds, load_checkpoint_model, load_run_model, read_run
from pipeline.data.transforms import TrainTransform
from pipeline.data.weak import DatasetError, WeakDataset, load_ground_truth, load_weak_dataset

STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}.note{color:#a40}"""


def _fmt(v: object, pct: bool = False) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v:
        return "-"
    return f"{v:.1f}%" if pct else f"{v:.4f}"


def _figure(name: str, alt: str) -> str:
    return f'<p><a href="{name}"><img src="{name}" alt="{html.escape(alt)}"></a></p>'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _gallery(run_dir: Path, cfg: Config, classes: tuple[str, ...], final: dict, out_dir: Path,
             count: int) -> list[str]:
    """Write the best/worst gallery rows (pipeline.commands.gallery); returns their HTML."""
    per_image = read_per_image(run_dir / final["dir"])
    if count <= 0 or not any(v is not None for v in per_image.values()):
        return ["<p>No per-image scores in the final stage (no ground truth?): no gallery.</p>"]
    records = {r.stem: r for r in load_weak_dataset(cfg.data, checked=run_dir / "images_checked.sqlite").records}

    def panels_for(stem: str) -> tuple[list, str]:
        record = records.get(stem)
        if record is None:
            raise DatasetError(f"{cfg.data.root}: image {stem!r} of {run_dir / 'scores.json'} is not in the "
                               "data set")
        gt = load_ground_truth(record, cfg.data)
        panels = [("image", read_image(record.image, cfg.data.max_pixels)),
                  ("ground truth", None if gt is None else colorize(gt))]
        for title, sub in (("coarse", "coarse"), ("CRF", "crf"), (f"final ({final['dir']})", final["dir"])):
            png = run_dir / sub / f"{stem}.png"
            panels.append((title, colorize(load_mask(png)) if png.is_file() else None))
        return panels, caption(stem, classes, record.label, per_image[stem])

    written = write_gallery(per_image, count, panels_for, out_dir)
    parts = []
    for kind in ("best", "worst"):
        rows = [(i, stem, name) for k, i, stem, name in written if k == kind]
        if rows:
            parts.append(f"<h3>{len(rows)} {kind} images by {html.escape(final['name'])} fg Jaccard</h3>")
        parts += [_figure(name, f"{kind} {i}: {stem}") for i, stem, name in rows]
    return parts


def write_report(weak_run: Path, out_dir: Path, *, full_metrics: dict | None, gallery: int = 4,
                 weak_metrics: dict | None = None) -> Path:
    """Write out_dir/report.html and its PNGs for the run in `weak_run`; returns the HTML path."""
    run_dir, out_dir = Path(weak_run), Path(out_dir)
    cfg, classes, _ = read_run(run_dir)
    scores_path = run_dir / "scores.json"
    if not scores_path.is_file():
        raise RunError(f"{scores_path}: not found: run `coarse2fine run` first")
    rows = read_json(scores_path).get("stages") or []
    if not rows:
        raise RunError(f"{scores_path}: no scored stages yet: run `coarse2fine run` first")
    out_dir.mkdir(parents=True, exist_ok=True)
    final = rows[-1]
    title = f"coarse2fine report: {run_dir.name}"
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>{len(classes) - 1} classes, final stage <b>{html.escape(final['name'])}</b>, "
            f"generated {time.strftime('%Y-%m-%d %H:%M')}.</p>", "<h2>Score per stage</h2>"]
    plots.plot_stages(rows, out_dir / "stages.png")
    body.append(_figure("stages.png", "score per stage"))
    body.append(_table(["stage", "images", "scored", "fg Jaccard", "mIoU", "pixel acc"],
                       [[r["name"], str(r.get("images", "-")), str(r.get("scored", "-")), _fmt(r.get("fg_jaccard")),
                         _fmt(r.get("miou")), _fmt(r.get("pixel_acc"))] for r in rows]))

    body.append("<h2>Weak vs full supervision</h2>")
    if full_metrics is None:
        body.append('<p class="note">No fully supervised reference was given (run <code>compare_runs</code> / '
                    "the CLI's compare command): the weak-vs-full plots are skipped.</p>")
    else:
        weak = weak_metrics or final
        source = "the last round's network" if weak_metrics else f"stage {final['name']}"
        classes = network_classes(cfg, classes) if weak_metrics else classes  # what the two networks predict
        plots.plot_per_class(classes, weak.get("per_class_iou") or {}, full_metrics.get("per_class_iou") or {},
                             out_dir / "per_class.png")
        plots.plot_relative(classes, weak, full_metrics, out_dir / "weak_vs_full.png")
        rel = plots.relative_scores(classes, weak, full_metrics)
        body.append(f"<p>Weak: {html.escape(source)}. Full: a network trained on the ground-truth masks.</p>")
        table = [["mIoU", _fmt(weak.get("miou")), _fmt(full_metrics.get("miou")), _fmt(rel["mIoU"], pct=True)]]
        if "fg_jaccard" in full_metrics:
            fg = [weak.get("fg_jaccard"), full_metrics["fg_jaccard"]]
            table.append(["fg Jaccard (mean per image)", _fmt(fg[0]), _fmt(fg[1]),
                          _fmt(100 * fg[0] / fg[1] if fg[0] is not None and fg[1] else None, pct=True)])
        table += [[c, _fmt((weak.get("per_class_iou") or {}).get(c)),
                   _fmt((full_metrics.get("per_class_iou") or {}).get(c)), _fmt(rel[c], pct=True)] for c in classes]
        body.append(_table(["", "weak", "full", "weak / full"], table))
        body += [_figure("per_class.png", "per-class IoU"), _figure("weak_vs_full.png", "weak as % of full")]
    links = [f'<a href="{n}">{n}</a>' for n in ("weak_metrics.json", "full_metrics.json") if (out_dir / n).is_file()]
    if links:
        body.append("<p>Metrics: " + ", ".join(links) + "</p>")

    body.append("<h2>Gallery: image | ground truth | coarse | CRF | final</h2>")
    body += _gallery(run_dir, cfg, classes, final, out_dir, gallery)
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    path = out_dir / "report.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


# ---------------------------------------------------------------------------------------------------------------
# Fully supervised reference

def network_truth(record: Record, cfg: Config, num_classes: int) -> np.ndarray | None:
    """The ground truth in the classes the rounds' network predicts: the data set's class ids, or, for a
    `rounds.foreground_network` run, 1 where the truth is the image's label and 0 elsewhere (255 stays not scored)."""
    gt = load_ground_truth(record, cfg.data, num_classes)
    if gt is None or not cfg.rounds.foreground_network:
        return gt
    return np.where(gt == IGNORE, IGNORE, gt == record.label).astype(np.uint8)


class GroundTruthDataset(torch.utils.data.Dataset):
    """(image, ground-truth mask) training pairs (`network_truth`), augmented by `transform(image, mask, rng)`
    (engine protocol)."""

    def __init__(self, records: list[Record], cfg: Config, num_classes: int, transform: TrainTransform):
        self.records, self.cfg, self.num_classes, self.transform = records, cfg, num_classes, transform

    def __len__(self) -> int:
        return len(self.records)

    def get(self, i: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        record = self.records[i]
        return self.transform(read_image(record.image, self.cfg.data.max_pixels),
                              network_truth(record, self.cfg, self.num_classes), rng)


def _scores(model: torch.nn.Module, records: list[Record], cfg: Config, classes: tuple[str, ...],
            num_classes: int, device) -> dict:
    """mIoU, per-class IoU, pixel accuracy (one confusion matrix) and the mean per-image foreground Jaccard of each
    image's label (the pipeline's measure; class 1 for a foreground network) of `model` on `records`, whole
    images at one scale, no flip. `classes` are the network's, `num_classes` the data set's."""
    model = model.to(device)
    cm = np.zeros((len(classes), len(classes)), np.int64)
    jaccards = []
    for r in records:
        gt = network_truth(r, cfg, num_classes)
        pred = np.argmax(predict_probs(model, read_image(r.image, cfg.data.max_pixels), device=device), axis=0)
        cm += confusion_matrix(pred, gt, len(classes))
        label = 1 if cfg.rounds.foreground_network else r.label
        jaccards.append(foreground_jaccard(pred == label, gt == label, gt != IGNORE))
    return {**scores_from_confusion(cm, classes), "fg_jaccard": float(np.mean(jaccards)), "images": len(records)}


def train_full_reference(cfg: Config, dataset: WeakDataset, records: list[Record], out_dir: Path,
                         device: torch.device) -> Path:
    """Train (or reuse / resume) the fully supervised network in out_dir; returns out_dir/model.pt."""
    key = {**cfg.keys_feeding("train"), "data": dataclasses.asdict(cfg.data), "stems": [r.stem for r in records],
           "foreground_network": cfg.rounds.foreground_network}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()[:16]
    manifest = out_dir / "manifest.json"
    if out_dir.exists() and (not manifest.is_file() or read_json(manifest).get("hash") != digest):
        shutil.rmtree(out_dir)  # made with other settings: its last.pt must not be resumed
    if stage_done(out_dir, digest) and (out_dir / "model.pt").is_file():
        return out_dir / "model.pt"
    write_json(manifest, {"hash": digest, "config": key, "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model, network_outputs(cfg, len(dataset.classes)))
    t = cfg.train
    transform = TrainTransform(t.crop, t.scale_range, True, t.jitter, model.mean, model.std)  # True: random flips
    train_set = GroundTruthDataset(records, cfg, len(dataset.classes), transform)
    weights = train_model(model, train_set, t, out_dir, seed=cfg.run.seed, resume=True, device=str(device))
    atomic_write_bytes(out_dir / "DONE", f"{digest}\n".encode())
    return weights


def compare_runs(weak_cfg: Config, *, full_iterations: int | None = None) -> Path:
    """Full-supervision reference for the weak run of `weak_cfg`, both networks scored, report written."""
    cfg = weak_cfg
    if full_iterations is not None:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, iterations=int(full_iterations)))
    run_dir = Path(cfg.run.root) / cfg.run.name
    if not (run_dir / "scores.json").is_file():
        raise RunError(f"{run_dir / 'scores.json'}: not found: run `coarse2fine run` first")
    weak_model, classes, _ = load_run_model(run_dir)  # classes: the network's (background / foreground, or all)
    run_classes = read_run(run_dir)[1]  # the data set's, as the run saw them
    if cfg.data.kind == "demo":
        ensure_demo(cfg.data)
    dataset = load_weak_dataset(cfg.data, checked=run_dir / "images_checked.sqlite")  # the run's decode cache
    if tuple(dataset.classes) != run_classes:
        raise RunError(f"{run_dir / 'run.json'}: classes {list(run_classes)} differ from the data set's "
                       f"{list(dataset.classes)} ({cfg.data.root})")
    records = [r for r in dataset.records if r.gt is not None]
    if not records:
        raise DatasetError(f"{Path(cfg.data.root) / cfg.data.masks}: no ground-truth masks (data.masks="
                           f"{cfg.data.masks!r}): full supervision needs them")
    device = resolve_device("auto")
    ref_dir = run_dir / "full_reference"
    weights = train_full_reference(cfg, dataset, records, ref_dir, device)
    full_model = load_checkpoint_model(weights, cfg.model, classes)
    num_classes = len(dataset.classes)
    full = {**_scores(full_model, records, cfg, classes, num_classes, device), "iterations": cfg.train.iterations,
            "weights": str(weights)}
    weak = {**_scores(weak_model, records, cfg, classes, num_classes, device),
            "weights": str(run_dir / f"round{finished_rounds(run_dir)[-1]}" / "train" / "model.pt")}
    write_json(ref_dir / "metrics.json", full)
    out_dir = run_dir / "compare"
    write_json(out_dir / "weak_metrics.json", weak)
    write_json(out_dir / "full_metrics.json", full)
    return write_report(run_dir, out_dir, full_metrics=full, weak_metrics=weak)
