"""What every stage receives, and the per-image file contract between stages.

A stage is a module in `stages/` with one function:

    def run(ctx: StageContext, src: Path | None, dst: Path) -> dict

It reads the previous stage's per-image files from `src` (None for the first stage), writes for every record
`dst/<stem>.npz` (soft map, see `pipeline.io.save_probs`) and then `dst/<stem>.png` (the pseudo-label with 255 =
ignore, see `pipeline.labels`), and returns a small JSON-able summary. The `.png` is written last, so an image whose
`.png` exists is finished: `pending()` streams the others, which makes every stage resumable per image.
The runner (`pipeline.orchestration.runner`) writes `manifest.json` and the `DONE` marker around `run()`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from pipeline.config import Config


@dataclass(frozen=True, slots=True)  # slots: one is made per row read from a RecordTable
class Record:
    """One training image: its file, its image-level label (a class id >= 1) and optional ground truth."""

    stem: str  # unique id; output files are named <stem>.png / <stem>.npz
    image: Path
    label: int  # index into StageContext.classes (0 = background is never an image label)
    gt: Path | None = None  # ground-truth mask, used only for scoring


@dataclass(frozen=True)
class StageContext:
    cfg: Config
    records: Sequence[Record]  # a RecordTable (pipeline.data.record_table) in a run; a tuple in tests
    classes: tuple[str, ...]  # classes[0] == "background"
    run_dir: Path
    round: int = 0  # 0 before the recursive rounds, k inside round k
    holdout: Sequence[Record] = ()  # the held-out photos (data.holdout, pipeline/data/holdout.py): no training stage
    # reads them; the steps that run on them get them as `records` (pipeline.orchestration.runner.Step.on)


FOREGROUND_CLASSES = ("background", "foreground")  # what a `rounds.foreground_network` network predicts


def network_outputs(cfg: Config, num_classes: int) -> int:
    """Output channels of the rounds' network for a data set of `num_classes` classes (see network_classes)."""
    return len(FOREGROUND_CLASSES) if cfg.rounds.foreground_network else num_classes


def network_classes(cfg: Config, classes: tuple[str, ...]) -> tuple[str, ...]:
    """The classes the rounds' network predicts: the data set's, or background / foreground with
    `rounds.foreground_network` (every label is merged into one foreground class; see stages/predict.py)."""
    return FOREGROUND_CLASSES if cfg.rounds.foreground_network else tuple(classes)


FULL_REFERENCE = "full_reference"  # folder below the run directory: the full reference (stages/reference.py)
COMPARE = "compare"  # folder below the run directory: weak and full scores (stages/compare.py) and the report
HOLDOUT_METRICS = "holdout_metrics.json"  # in the compare folder: the three scores on the held-out photos
HOLDOUT_COARSE = "holdout/coarse"  # folders below the run directory: the pipeline applied to the held-out photos
HOLDOUT_CRF = "holdout/crf"  # directly (coarse -> crf, no network), a reference of `coarse2fine compare`


def holdout_stage(round_: int) -> str:
    """Folder (below the run directory) of round `round_`'s network's predictions of the held-out photos."""
    return f"round{round_}/holdout"


def training_labels(round_: int) -> str:
    """Folder (below the run directory) of the pseudo-labels round `round_` trains on: the previous round's CRF."""
    return "crf" if round_ <= 1 else f"round{round_ - 1}/crf"


class Pending:
    """The records whose output `dst/<stem>.png` did not exist when this was made, streamed: they are counted
    then (`len`, one pass of file checks), and iterating checks each file again as it goes, so nothing per image
    is held (N may be millions) and an image finished in the meantime is not handed out twice."""

    def __init__(self, records: Sequence[Record], dst: Path):
        self.records, self.dst = records, Path(dst)
        self.count = sum(1 for _ in self)

    def __iter__(self) -> Iterator[Record]:
        return (r for _, r in self.indexed())

    def indexed(self) -> Iterator[tuple[int, Record]]:
        """(position in `records`, record) of each pending record, checked as it goes."""
        return ((i, r) for i, r in enumerate(self.records) if not (self.dst / f"{r.stem}.png").exists())

    def __len__(self) -> int:
        return self.count


def pending(records: Sequence[Record], dst: Path) -> Pending:
    """Records whose output `dst/<stem>.png` does not exist yet (see `Pending`)."""
    return Pending(records, dst)


def stage_done(stage_dir: Path, digest: str | None = None) -> bool:
    """The stage folder is complete: its DONE marker (written last by the runner) exists and, given `digest`, holds
    that hash. The runner, `coarse2fine status` and the report all ask this one function."""
    marker = Path(stage_dir) / "DONE"
    if not marker.is_file():
        return False
    return digest is None or marker.read_text().strip() == digest
