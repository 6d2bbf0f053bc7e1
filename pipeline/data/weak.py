"""The weak-label data set: a folder of images, one class name per image, optional ground truth for scoring.

    <root>/images/...        any PIL-readable images (sub-folders allowed)
    <root>/labels.csv        header `image,label`; `image` is a path relative to images/, `label` a class name
    <root>/classes.txt       one class name per line, `background` first (optional: else background + sorted labels)
    <root>/masks/<stem>.png  optional ground truth: scoring, and training the full reference (stages/reference.py)

Labels can instead come from the file name (`data.label_pattern`, a regex whose group 1 is the class name, e.g.
COCO-MVal's `baseball bat03_000000123456.jpg`), or be dropped entirely (`data.class_agnostic`: one foreground class).
Every problem raises `DatasetError` naming the file (and row) and the reason; with `data.on_bad_image: skip`, rows with
a missing, empty, undecodable or too large image, an unknown label or no label are skipped and listed in
`WeakDataset.skipped` instead. Every image is decoded once here (pipeline.data.image_check), so a file whose header is
intact but whose pixels are not (a JPEG cut in half) is found before any stage runs, and stages never see it.
Never skipped: malformed label files, duplicate image ids, and paths that are absolute or contain `..` (an output
`<stem>.png` must stay inside its stage folder: stems never contain `/`).
Hidden files (names starting with '.') in the image folder are ignored. The rows are read as streams
(pipeline.data.weak_rows) and the records stored in a SQLite file (pipeline.data.record_table), a chunk at a time:
loading N images holds no object per image.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from pipeline.config import Config, DataConfig
from pipeline.data.image_check import ImageChecker
from pipeline.data.record_table import RecordTable, RecordWriter
from pipeline.data.weak_rows import (DatasetError, label_from_name, leaves_folder, list_images, read_classes,
                                     read_labels_csv, stem_of, too_long, utf8_name)
from pipeline.io import IGNORE, image_size, load_mask, read_image
from pipeline.stage import Record

CHUNK_ROWS = 256  # rows validated (and images decoded) per step of the load: its memory, whatever N is
T = TypeVar("T")


@dataclass(frozen=True)
class WeakDataset:
    root: Path
    records: RecordTable  # in a SQLite file (pipeline.data.record_table): read lazily
    classes: tuple[str, ...]  # classes[0] == "background"
    skipped: tuple[str, ...] = field(default=())  # "<file>: <reason>" for rows skipped under on_bad_image=skip


def load_weak_dataset(cfg: DataConfig, checked: Path | None = None, table: Path | None = None,
                      classes: tuple[str, ...] | None = None) -> WeakDataset:
    """Read and validate the data set described by the `data:` config section, decoding every image once.

    The records go to a SQLite file (`table`, e.g. a run's `records.sqlite`; None: a temporary file that lives as
    long as the returned records), and rows are read, checked and stored a chunk at a time, so loading holds no
    object per image (pipeline.data.record_table). `checked`: a cache of the images that decoded (a run
    directory's `images_checked.sqlite`), so that a rerun decodes only new or changed files. `classes`: read the
    labels in this class list instead of the folder's own (held-out photos, in their training set's classes)."""
    root = Path(cfg.root)
    image_dir = root / cfg.images
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: image folder not found (data.root={cfg.root!r}, data.images={cfg.images!r})")
    from_csv = bool(cfg.labels) and not cfg.class_agnostic
    if from_csv and not (root / cfg.labels).is_file():
        raise DatasetError(f"{root / cfg.labels}: labels file not found")
    if not from_csv and not cfg.class_agnostic and not cfg.label_pattern:
        raise DatasetError("data.labels is empty and data.label_pattern is not set: nowhere to read labels from")

    def rows() -> Iterator[tuple[str, str, int]]:
        if from_csv:
            return read_labels_csv(root / cfg.labels)
        return ((rel, label_from_name(path, cfg), 0) for rel, path in list_images(image_dir))

    if cfg.class_agnostic:
        classes = ("background", "foreground")
    elif classes is not None:
        pass
    elif cfg.classes and (root / cfg.classes).is_file():
        classes = read_classes(root / cfg.classes)
    elif cfg.classes and cfg.labels:
        raise DatasetError(f"{root / cfg.classes}: class list not found (set data.classes: '' to derive it)")
    else:  # a first pass over the rows: only the label names are kept
        classes = ("background", *sorted({label for _, label, _ in rows() if label}))
    skipped: list[str] = []

    def bad(message: str) -> None:
        if cfg.on_bad_image == "skip":
            skipped.append(message)
        else:
            raise DatasetError(message)

    with RecordWriter(table) as writer, ImageChecker(cfg.max_pixels, checked) as checker:
        for chunk in _chunks(rows(), CHUNK_ROWS):
            _add_rows(chunk, writer, checker, cfg, classes, bad)
        if from_csv:
            for rel, path in list_images(image_dir):
                if not utf8_name(rel) or not writer.knows(rel):
                    bad(f"{path}: image has no row in {root / cfg.labels}")
        if not writer.count:
            raise DatasetError(f"{root}: the data set holds no usable images")
    assert writer.table is not None
    return WeakDataset(root=root, records=writer.table, classes=classes, skipped=tuple(skipped))


def _add_rows(rows: list[tuple[str, str, int]], writer: RecordWriter, checker: ImageChecker, cfg: DataConfig,
              classes: tuple[str, ...], bad: Callable[[str], None]) -> None:
    """Validate one chunk of (image path, label name, labels-file line) rows and store the good ones in `writer`."""
    root, image_dir = Path(cfg.root), Path(cfg.root) / cfg.images
    to_check = sorted({rel for rel, _, _ in rows if not leaves_folder(rel) and not too_long(stem_of(rel))})
    problems = dict(zip(to_check, checker.check([image_dir / rel for rel in to_check])))
    index = {name: i for i, name in enumerate(classes)}
    for rel, label, line in rows:
        where = f"{root / cfg.labels}:{line}" if line else str(image_dir / rel)
        if leaves_folder(rel):
            raise DatasetError(f"{where}: image path {rel!r} leaves {image_dir} (absolute paths, '..' and NUL are "
                               "not allowed)")
        if not utf8_name(rel):
            bad(f"{where}: file name is not valid UTF-8")
            continue
        writer.remember(PurePosixPath(rel).as_posix())
        stem = stem_of(rel)
        if too_long(stem):
            bad(f"{where}: image id {stem[:40]!r}... is too long for output file names (at most 251 bytes)")
            continue
        if problems[rel]:
            bad(f"{where}: {problems[rel]}")
            continue
        other = writer.claim(stem, rel)
        if other is not None:
            raise DatasetError(f"{where}: duplicate image id {stem!r} (also {other})")
        if cfg.class_agnostic:
            label_id = 1
        elif label not in index:
            bad(f"{where}: label {label!r} is not in the class list ({', '.join(classes[1:])})")
            continue
        else:
            label_id = index[label]
            if label_id == 0:
                bad(f"{where}: an image label cannot be the background class {classes[0]!r}")
                continue
        gt = root / cfg.masks / f"{stem}.png" if cfg.masks else None
        writer.add(Record(stem=stem, image=image_dir / rel, label=label_id, gt=gt if gt and gt.is_file() else None))


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    source = iter(items)
    while chunk := list(itertools.islice(source, size)):
        yield chunk


def load_ground_truth(record: Record, cfg: DataConfig, num_classes: int | None = None) -> np.ndarray | None:
    """Ground truth of one record as class ids (255 = not scored), or None when it has none.

    Raises DatasetError naming the mask file when its size differs from the image's, or (given `num_classes`, with
    `data.gt_foreground_value: -1`) when it holds values that are neither class ids nor `data.gt_ignore_values`.
    """
    if record.gt is None:
        return None
    raw = load_mask(record.gt)
    size = image_size(record.image)
    if raw.shape != size:
        raise DatasetError(f"{record.gt}: ground truth {raw.shape} does not match image {record.image} {size}")
    if num_classes is not None and cfg.gt_foreground_value < 0:
        _check_values(record.gt, raw, num_classes, tuple(cfg.gt_ignore_values), "data.gt_ignore_values")
    ignore = np.isin(raw, cfg.gt_ignore_values)
    if cfg.gt_foreground_value >= 0:
        mask = np.where(raw == cfg.gt_foreground_value, record.label, 0).astype(np.uint8)
    else:
        mask = raw.copy()
    mask[ignore] = IGNORE
    return mask


def network_truth(record: Record, cfg: Config, num_classes: int) -> np.ndarray | None:
    """The ground truth in the classes the rounds' network predicts: the data set's class ids, or, for a
    `rounds.foreground_network` run, 1 where the truth is the image's label and 0 elsewhere (255 stays not scored)."""
    gt = load_ground_truth(record, cfg.data, num_classes)
    if gt is None or not cfg.rounds.foreground_network:
        return gt
    return np.where(gt == IGNORE, IGNORE, gt == record.label).astype(np.uint8)


class GroundTruthDataset(torch.utils.data.Dataset):
    """(image, ground-truth mask) training pairs of records that have one (`network_truth`), augmented by
    `transform(image, mask, rng)` (the engine's data set protocol): what the full reference learns."""

    def __init__(self, records: Sequence[Record], cfg: Config, num_classes: int, transform):
        self.records, self.cfg, self.num_classes, self.transform = list(records), cfg, num_classes, transform

    def __len__(self) -> int:
        return len(self.records)

    def get(self, i: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        record = self.records[i]
        return self.transform(read_image(record.image, self.cfg.data.max_pixels),
                              network_truth(record, self.cfg, self.num_classes), rng)


class PseudoLabelDataset(torch.utils.data.Dataset):
    """(image, pseudo-label) pairs for training: images from the records, masks `<mask_dir>/<stem>.png`.

    `transform(image, mask, rng)` moves both together (pipeline.data.transforms.TrainTransform); the engine passes an RNG derived from
    (seed, sample counter) to `get`, so augmentation is reproducible (see pipeline.learn.engine).
    """

    def __init__(self, records: Sequence[Record], mask_dir: Path, transform, max_pixels: int,
                 num_classes: int | None = None, foreground_only: bool = False):
        # a RecordTable is indexed in place (each DataLoader worker opens the file itself); anything else is listed
        self.records = records if isinstance(records, RecordTable) else list(records)
        self.mask_dir, self.transform, self.max_pixels = Path(mask_dir), transform, max_pixels
        self.num_classes = num_classes  # given: a mask value >= num_classes (other than 255) raises DatasetError
        self.foreground_only = foreground_only  # every class id >= 1 becomes 1 (after the check above)

    def __len__(self) -> int:
        return len(self.records)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        record = self.records[i]
        image = read_image(record.image, self.max_pixels)
        mask = load_mask(self.mask_dir / f"{record.stem}.png")
        if mask.shape != image.shape[:2]:
            raise DatasetError(f"{self.mask_dir / record.stem}.png: mask {mask.shape} does not match image "
                               f"{record.image} {image.shape[:2]}")
        if self.num_classes is not None:
            _check_values(self.mask_dir / f"{record.stem}.png", mask, self.num_classes, (IGNORE,), "ignore")
        if self.foreground_only:
            mask = np.where((mask > 0) & (mask != IGNORE), 1, mask).astype(np.uint8)
        return image, mask

    def get(self, i: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample i augmented with draws from `rng` only (the engine's data set protocol)."""
        image, mask = self.load(i)
        return self.transform(image, mask, rng)


def _check_values(path: Path, mask: np.ndarray, num_classes: int, allowed: tuple[int, ...], what: str) -> None:
    values = np.unique(mask)
    wrong = values[(values >= num_classes) & ~np.isin(values, allowed)]
    if len(wrong):
        raise DatasetError(f"{path}: mask values {wrong.tolist()} are not class ids 0..{num_classes - 1} "
                           f"(nor {what} {list(allowed)})")
