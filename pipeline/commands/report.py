"""Weak-vs-full report: an HTML page with plots and a best/worst gallery for one weak-supervision run.

    path = compare_report(Path("runs/demo"))   # runs/demo/compare/report.html, after `coarse2fine compare`
    path = write_report(Path("runs/demo"), Path("runs/demo/compare"), full_metrics=None)   # weak run only

This module renders what the stages wrote; it trains and scores nothing. `coarse2fine compare` first runs the steps
`full_reference` (stages/reference.py: the same network trained on the ground truth of the weak run's photos) and
`compare` (stages/compare.py: the last round's weak network and the reference scored alike on those photos) through
the runner (pipeline.orchestration.reference_run.run_reference), then calls `compare_report`, which renders
runs/<name>/compare/weak_metrics.json and full_metrics.json (mIoU, per-class IoU, pixel accuracy, mean per-image
foreground Jaccard) with `write_report`.

With held-out photos (data.holdout) the compare step also wrote holdout_metrics.json: the weak network, the full
reference and the pipeline applied to the held-out photos directly (holdout/crf), which the page shows side by side;
the rounds' `round<k>/holdout` rows are in the stages plot and table like every stage.

`write_report` writes out_dir/report.html (self-contained: inline CSS, no scripts, relative links only) and PNGs
beside it: stages.png (fg Jaccard and mIoU per stage and round, from scores.json), per_class.png and
weak_vs_full.png (only with `full_metrics`; the weak side is `weak_metrics` if given, else the final stage's scores),
and gallery_best_<i>.png / gallery_worst_<i>.png: image | ground truth | coarse | CRF | final stage for the
`gallery` best and worst images by the final stage's per-image foreground Jaccard.
"""
from __future__ import annotations

import html
import time
from pathlib import Path

from pipeline.commands import report_plots as plots
from pipeline.commands.gallery import caption, write_gallery
from pipeline.commands.predict_images import colorize
from pipeline.commands.trained import RunError, read_run
from pipeline.config import Config
from pipeline.data.weak import DatasetError, load_ground_truth, load_weak_dataset
from pipeline.io import atomic_write_bytes, load_mask, read_image, read_json
from pipeline.metrics import read_per_image
from pipeline.stage import COMPARE, HOLDOUT_METRICS, network_classes, stage_done

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


def _holdout_section(held: dict, weak: dict, full: dict) -> list[str]:
    """The held-out table: the weak and full networks on the training and on the held-out photos, and the pipeline
    applied to the held-out photos directly."""
    pipeline = held.get("pipeline") or {}
    rows = [[name, _fmt(train.get("fg_jaccard")), _fmt(test.get("fg_jaccard")), _fmt(train.get("miou")),
             _fmt(test.get("miou"))]
            for name, train, test in (("weak network (last round)", weak, held.get("weak") or {}),
                                      ("full network (ground truth)", full, held.get("full") or {}),
                                      ("pipeline on the photos (coarse -> crf, no network)", {}, pipeline))]
    return ["<h2>Held-out photos</h2>",
            f"<p>{held.get('images', 0)} photos with ground truth that no training stage saw "
            "(<code>data.holdout</code>). The networks are scored alike (whole image, one scale, no flip); the "
            "pipeline applied to the held-out photos directly is what labelling new photos gives instead of "
            "training (its mIoU is over the data set's classes, each photo restricted to its label).</p>",
            _table(["", "fg Jaccard, training photos", "fg Jaccard, held out", "mIoU, training photos",
                    "mIoU, held out"], rows)]


def write_report(weak_run: Path, out_dir: Path, *, full_metrics: dict | None, gallery: int = 4,
                 weak_metrics: dict | None = None, holdout_metrics: dict | None = None) -> Path:
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
    final = [r for r in rows if not r["name"].endswith("/holdout")][-1]  # the last stage on the training photos
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
        body.append('<p class="note">No fully supervised reference was given (run <code>coarse2fine '
                    "compare</code>): the weak-vs-full plots are skipped.</p>")
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
    if holdout_metrics is not None:
        body += _holdout_section(holdout_metrics, weak_metrics or {}, full_metrics or {})
    links = [f'<a href="{n}">{n}</a>' for n in ("weak_metrics.json", "full_metrics.json", HOLDOUT_METRICS)
             if (out_dir / n).is_file()]
    if links:
        body.append("<p>Metrics: " + ", ".join(links) + "</p>")

    body.append("<h2>Gallery: image | ground truth | coarse | CRF | final</h2>")
    body += _gallery(run_dir, cfg, classes, final, out_dir, gallery)
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    path = out_dir / "report.html"
    atomic_write_bytes(path, page.encode("utf-8"))
    return path


def compare_report(run_dir: Path, gallery: int = 4) -> Path:
    """Render run_dir/compare/report.html from the weak and full scores the compare step wrote."""
    out_dir = Path(run_dir) / COMPARE
    if not stage_done(out_dir):
        raise RunError(f"{out_dir}: no finished comparison (no DONE marker): run `coarse2fine compare` first")
    held = out_dir / HOLDOUT_METRICS
    return write_report(run_dir, out_dir, full_metrics=read_json(out_dir / "full_metrics.json"),
                        weak_metrics=read_json(out_dir / "weak_metrics.json"), gallery=gallery,
                        holdout_metrics=read_json(held) if held.is_file() else None)
