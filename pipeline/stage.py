"""What every stage receives, and the per-image file contract between stages.

A stage is a module in `stages/` with one function:

    def run(ctx: StageContext, src: Path | None, dst: Path) -> dict

It reads the previous stage's per-image files from `src` (None for the first stage), writes for every record
`dst/<stem>.npz` (soft map, see `pipeline.io.save_probs`) and then `dst/<stem>.png` (the pseudo-label with 255 =
ignore, see `pipeline.labels`), and returns a small JSON-able summary. The `.png` is written last, so an image whose
`.png` exists is finished: `pending()` lists the others, which makes every stage resumable per image.
The runner (`pipeline.orchestration.runner`) writes `manifest.json` and the `DONE` marker around `run()`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import Config


@dataclass(frozen=True, slots=True)  # slots: the driver holds one per image
class Record:
    """One training image: its file, its image-level label (a class id >= 1) and optional ground truth."""

    stem: str  # unique id; output files are named <stem>.png / <stem>.npz
    image: Path
    label: int  # index into StageContext.classes (0 = background is never an image label)
    gt: Path | None = None  # ground-truth mask, used only for scoring


@dataclass(frozen=True)
class StageContext:
    cfg: Config
    records: tuple[Record, ...]
    classes: tuple[str, ...]  # classes[0] == "background"
    run_dir: Path
    round: int = 0  # 0 before the recursive rounds, k inside round k


FOREGROUND_CLASSES = ("background", "foreground")  # what a `rounds.foreground_network` network predicts


def network_outputs(cfg: Config, num_classes: int) -> int:
    """Output channels of the rounds' network for a data set of `num_classes` classes (see network_classes)."""
    return len(FOREGROUND_CLASSES) if cfg.rounds.foreground_network else num_classes


def network_classes(cfg: Config, classes: tuple[str, ...]) -> tuple[str, ...]:
    """The classes the rounds' network predicts: the data set's, or background / foreground with
    `rounds.foreground_network` (every label is merged into one foreground class; see stages/predict.py)."""
    return FOREGROUND_CLASSES if cfg.rounds.foreground_network else tuple(classes)


def training_labels(round_: int) -> str:
    """Folder (below the run directory) of the pseudo-labels round `round_` trains on: the previous round's CRF."""
    return "crf" if round_ <= 1 else f"round{round_ - 1}/crf"


def pending(records: tuple[Record, ...] | list[Record], dst: Path) -> list[Record]:
    """Records whose output `dst/<stem>.png` does not exist yet."""
    return [r for r in records if not (dst / f"{r.stem}.png").exists()]


def stage_done(stage_dir: Path, digest: str | None = None) -> bool:
    """The stage folder is complete: its DONE marker (written last by the runner) exists and, given `digest`, holds
    that hash. The runner, `coarse2fine status` and the report all ask this one function."""
    marker = Path(stage_dir) / "DONE"
    if not marker.is_file():
        return False
    return digest is None or marker.read_text().strip() == digest
