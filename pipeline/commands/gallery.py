"""Best/worst image galleries: one PNG row of panels per image, ranked by a per-image score.

    best, worst = best_and_worst({"a": 0.9, "b": 0.2, "c": None}, count=1)          # (["a"], ["b"])
    files = write_gallery(per_image, 4, lambda stem: (panels, caption), Path("out"))
    # -> [("best", 1, "a", "gallery_best_1.png"), ..., ("worst", 1, "b", "gallery_worst_1.png")]

Used by the evaluation command (`coarse2fine evaluate --gallery N`: image | ground truth | prediction | overlay)
and by the weak-vs-full report (pipeline.commands.report: image | ground truth | coarse | CRF | final). Images without a
score (None: no ground truth) are never shown; an image is never both among the best and the worst, so with fewer
than 2 x count scored images the worst list is shorter.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pipeline.commands.report_plots import plot_panels

Panels = Sequence[tuple[str, "np.ndarray | None"]]  # (title, RGB uint8 [H, W, 3] or None = not available)


def caption(stem: str, classes: Sequence[str], label: int, score: float) -> str:
    """"<stem> (<class name>): fg Jaccard 0.812", the line above every gallery row."""
    name = classes[label] if 0 <= label < len(classes) else str(label)
    return f"{stem} ({name}): fg Jaccard {score:.3f}"


def best_and_worst(per_image: dict[str, float | None], count: int) -> tuple[list[str], list[str]]:
    """The `count` highest- and lowest-scoring stems (ties broken by stem), best first / worst first."""
    ranked = sorted((float(v), s) for s, v in per_image.items() if v is not None)
    best = [s for _, s in sorted(ranked, key=lambda t: (-t[0], t[1]))][:max(count, 0)]
    worst = [s for _, s in ranked if s not in best][:max(count, 0)]
    return best, worst


def write_gallery(per_image: dict[str, float | None], count: int,
                  panels_for: Callable[[str], tuple[Panels, str]], out_dir: Path) -> list[tuple[str, int, str, str]]:
    """Write out_dir/gallery_{best,worst}_<i>.png; returns (kind, i, stem, file name) in writing order."""
    best, worst = best_and_worst(per_image, count)
    written = []
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for kind, stems in (("best", best), ("worst", worst)):
        for i, stem in enumerate(stems, start=1):
            panels, caption = panels_for(stem)
            name = f"gallery_{kind}_{i}.png"
            plot_panels(panels, caption, Path(out_dir) / name)
            written.append((kind, i, stem, name))
    return written
