"""The held-out photos of a weak run (`data.holdout`): photos no training stage sees, on which every round's network
is scored (stages/holdout.py) and `coarse2fine compare` scores the weak and full networks and the pipeline applied
to them directly.

    train, held_out = load_run_data(cfg.data, run_dir)   # the run's training records and held-out records

`data.holdout` is one of (pipeline.config.holdout_spec):
- "" - no held-out photos; the training records are the whole data set (held_out is None).
- a number in (0, 1) - that share of the data set's images, chosen per image id by `held_out_by_hash`: the first
  8 bytes of sha256(stem) read as a fraction of 2**64, held out when below the share. The choice depends on the
  stem alone: the same on every machine, whatever the order of the images, and adding images moves no other.
- a folder laid out like `data.root` (images, masks, labels where the run has labels), its path relative to
  `data.root` like `data.images` (or absolute), read with the same reader and `data:` settings, in the training
  set's class list; its image ids must differ from the training set's.

The records go to SQLite files in the run directory (`records.sqlite`, `holdout_records.sqlite`; pipeline.data.
record_table), streamed: the split holds nothing per image. `tables=False` writes them to temporary files instead
(`coarse2fine compare` reads the finished run's data set without rewriting its files).
"""
from __future__ import annotations

import dataclasses
import hashlib
import heapq
import tempfile
from pathlib import Path
from typing import Iterator

from pipeline.config import DataConfig, holdout_spec
from pipeline.data.record_table import RecordTable, sorted_stems, write_records
from pipeline.data.weak import WeakDataset, load_weak_dataset
from pipeline.data.weak_rows import DatasetError

RECORDS_FILE = "records.sqlite"  # the training records, in the run directory
HOLDOUT_RECORDS_FILE = "holdout_records.sqlite"  # the held-out records, in the run directory


def held_out_by_hash(stem: str, share: float) -> bool:
    """Whether image id `stem` is among the held-out `share` of a data set (see the module docstring)."""
    position = int.from_bytes(hashlib.sha256(stem.encode("utf-8")).digest()[:8], "big") / 2 ** 64
    return position < share


def load_run_data(cfg: DataConfig, run_dir: Path, tables: bool = True) -> tuple[WeakDataset, RecordTable | None]:
    """The run's data set with only its training records, and its held-out records (None without `data.holdout`).
    DatasetError (naming data.holdout) when the split leaves either side empty or the folder shares image ids."""
    run_dir = Path(run_dir)
    checked = run_dir / "images_checked.sqlite"
    spec = holdout_spec(cfg.holdout)
    table = run_dir / RECORDS_FILE if tables else None
    held_table = run_dir / HOLDOUT_RECORDS_FILE if tables else None
    if spec is None:
        return load_weak_dataset(cfg, checked=checked, table=table), None
    if isinstance(spec, float):
        every = load_weak_dataset(cfg, checked=checked)  # a temporary table, split into the two below
        train = write_records((r for r in every.records if not held_out_by_hash(r.stem, spec)), table)
        held = write_records((r for r in every.records if held_out_by_hash(r.stem, spec)), held_table)
        if not len(train) or not len(held):
            raise DatasetError(f"{cfg.root}: data.holdout={cfg.holdout!r} holds out {len(held)} of "
                               f"{len(every.records)} images, leaving {'no training' if not len(train) else 'none'} "
                               "(choose another share)")
        return dataclasses.replace(every, records=train), held
    folder = Path(cfg.root) / spec  # relative to the data set, like data.images (an absolute path stays)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: held-out folder not found (data.holdout={cfg.holdout!r})")
    dataset = load_weak_dataset(cfg, checked=checked, table=table)
    held_cfg = dataclasses.replace(cfg, root=str(folder), holdout="")
    held_set = load_weak_dataset(held_cfg, checked=run_dir / "holdout_checked.sqlite", table=held_table,
                                 classes=dataset.classes)
    shared = next(_common(sorted_stems(dataset.records), sorted_stems(held_set.records)), None)
    if shared is not None:
        raise DatasetError(f"{folder}: image id {shared!r} is also a training image of {cfg.root} "
                           "(data.holdout: held-out photos must be other photos)")
    skipped = dataset.skipped + tuple(f"{line} (held out)" for line in held_set.skipped)
    return dataclasses.replace(dataset, skipped=skipped), held_set.records


def photos_scored_in(cfg: DataConfig, folder: Path) -> WeakDataset:
    """The data set with the records a stage folder holds outputs for (`coarse2fine evaluate --pred`): the held-out
    ones when it holds the first held-out photo's `<stem>.npz` or `.png` (a run's `round<k>/holdout`), else the
    training ones. Without `data.holdout`, the whole data set."""
    with tempfile.TemporaryDirectory() as scratch:  # no run directory: the tables and decode cache are temporary
        train, held = load_run_data(cfg, Path(scratch), tables=False)
    first = next(iter(held), None) if held is not None else None
    if first is not None and any((Path(folder) / f"{first.stem}{suffix}").is_file() for suffix in (".npz", ".png")):
        return dataclasses.replace(train, records=held)
    return train


def _common(a: Iterator[str], b: Iterator[str]) -> Iterator[str]:
    """The strings in both sorted streams, streamed (a merge: nothing held per item)."""
    previous = None
    for stem in heapq.merge(a, b):
        if stem == previous:
            yield stem
        previous = stem
