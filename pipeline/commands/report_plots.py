"""The PNG figures of the weak-vs-full report (pipeline.commands.report), drawn with matplotlib's Agg canvas.

    plot_stages(rows, Path("out/stages.png"))                       # rows: scores.json "stages"
    plot_per_class(classes, weak_iou, full_iou, Path("out/per_class.png"))
    plot_relative(classes, weak, full, Path("out/weak_vs_full.png"))
    plot_panels([("image", rgb), ("ground truth", rgb2)], "caption", Path("out/gallery_best_1.png"))

Figures are made as `matplotlib.figure.Figure` objects on a FigureCanvasAgg (no pyplot, no global backend switch,
nothing needs a display) and written atomically (pipeline.io.atomic_write_bytes).
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.io import atomic_write_bytes

DPI = 100  # figure resolution (px per inch)
WEAK_COLOUR, FULL_COLOUR = "#1f77b4", "#ff7f0e"  # matplotlib's first two default colours


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def _num(v: object) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan


def plot_stages(rows: Sequence[dict], path: Path) -> None:
    """Foreground Jaccard and mIoU of every scored stage, in run order; rounds shaded alternately. The rounds'
    `round<k>/holdout` rows (their networks on the held-out photos) are drawn as markers of their own, not joined to
    the stages on the training photos."""
    names = [r["name"] for r in rows]
    x = np.arange(len(rows))
    held = np.array([r["name"].endswith("/holdout") for r in rows], bool)
    fig = Figure(figsize=(max(5.0, 0.9 * len(rows) + 2), 3.6))
    ax = fig.add_subplot()
    for k in sorted({int(r.get("round") or 0) for r in rows}):
        idx = [i for i, r in enumerate(rows) if int(r.get("round") or 0) == k]
        if k % 2 == 1:
            ax.axvspan(min(idx) - 0.5, max(idx) + 0.5, color="0.93", zorder=0)
    fg = np.array([_num(r.get("fg_jaccard")) for r in rows])
    miou = np.array([_num(r.get("miou")) for r in rows])
    ax.plot(x[~held], fg[~held], "o-", color=WEAK_COLOUR, label="fg Jaccard")
    ax.plot(x[~held], miou[~held], "s--", color=FULL_COLOUR, label="mIoU")
    if held.any():
        ax.plot(x[held], fg[held], "D", color=WEAK_COLOUR, mfc="white", label="fg Jaccard, held out")
        ax.plot(x[held], miou[held], "D", color=FULL_COLOUR, mfc="white", label="mIoU, held out")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title("Score per stage (shaded: odd rounds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, path)


def plot_per_class(classes: Sequence[str], weak: dict, full: dict, path: Path) -> None:
    """Grouped bars: per-class IoU of the weak network and of the fully supervised one (missing = no bar)."""
    x = np.arange(len(classes))
    fig = Figure(figsize=(max(5.0, 0.8 * len(classes) + 2), 3.6))
    ax = fig.add_subplot()
    ax.bar(x - 0.2, [_num(weak.get(c)) for c in classes], 0.4, color=WEAK_COLOUR, label="weak")
    ax.bar(x + 0.2, [_num(full.get(c)) for c in classes], 0.4, color=FULL_COLOUR, label="full")
    ax.set_xticks(x, list(classes), rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU")
    ax.set_title("Per-class IoU: weak vs full supervision")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside the axes: bars reach the top
    _save(fig, path)


def relative_scores(classes: Sequence[str], weak: dict, full: dict) -> dict[str, float | None]:
    """Weak as a percentage of full for "mIoU" and every class; None where full is missing or 0."""
    def pct(w: object, f: object) -> float | None:
        w, f = _num(w), _num(f)
        return None if not (math.isfinite(w) and math.isfinite(f) and f > 0) else 100.0 * w / f

    out = {"mIoU": pct(weak.get("miou"), full.get("miou"))}
    for c in classes:
        out[c] = pct((weak.get("per_class_iou") or {}).get(c), (full.get("per_class_iou") or {}).get(c))
    return out


def plot_relative(classes: Sequence[str], weak: dict, full: dict, path: Path) -> None:
    """Bars of weak / full x 100 % for mIoU and each class, with the 100 % line."""
    rel = relative_scores(classes, weak, full)
    names = list(rel)
    x = np.arange(len(names))
    fig = Figure(figsize=(max(5.0, 0.8 * len(names) + 2), 3.6))
    ax = fig.add_subplot()
    values = [_num(rel[n]) for n in names]
    ax.bar(x, values, 0.6, color=[FULL_COLOUR if i == 0 else WEAK_COLOUR for i in range(len(names))])
    for xi, v in zip(x, values):
        if math.isfinite(v):
            ax.annotate(f"{v:.0f}%", (xi, v), ha="center", va="bottom", fontsize=8)
    ax.axhline(100, color="k", lw=1, ls=":")
    ax.set_xticks(x, names, rotation=30, ha="right")
    top = max([v for v in values if math.isfinite(v)], default=100.0)
    ax.set_ylim(0, max(110.0, top * 1.12))
    ax.set_ylabel("weak / full (%)")
    ax.set_title("Weak supervision as a percentage of full supervision")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_panels(panels: Sequence[tuple[str, np.ndarray | None]], caption: str, path: Path) -> None:
    """One row of titled RGB panels (None = a grey 'not available' panel of the images' shape) with a caption above.

    Constrained layout places the caption above the panel titles whatever the images' aspect (a fixed layout drew
    it over the titles of portrait photos); the figure's height follows the first image's aspect."""
    shapes = [rgb.shape[:2] for _, rgb in panels if rgb is not None]
    aspect = shapes[0][0] / shapes[0][1] if shapes else 1.0  # height / width
    fig = Figure(figsize=(2.4 * len(panels), 2.4 * min(max(aspect, 0.25), 4.0) + 0.7), layout="constrained")
    for i, (title, rgb) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        if rgb is None:
            ax.set_facecolor("0.85")
            ax.set_box_aspect(aspect)
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes)
        else:
            ax.imshow(rgb, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(caption, fontsize=10)
    _save(fig, path)
