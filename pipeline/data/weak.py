"""The weak-label data set: a folder of images, one class name per image, optional ground truth for scoring.

    <root>/images/...        any PIL-readable images (sub-folders allowed)
    <root>/labels.csv        header `image,label`; `image` is a path relative to images/, `label` a class name
    <root>/classes.txt       one class name per line, `background` first (optional: else background + sorted labels)
    <root>/masks/<stem>.png  optional ground truth, used only by `evaluate`

Labels can instead come from the file name (`data.label_pattern`, a regex whose group 1 is the class name, e.g.
COCO-MVal's `baseball bat03_000000123456.jpg`), or be dropped entirely (`data.class_agnostic`: one foreground class).
Every problem raises `DatasetError` naming the file (and row) and the reason; with `data.on_bad_image: skip`, rows with
a missing, empty, undecodable or too large image, an unknown label or no label are skipped and listed in
`WeakDataset.skipped` instead. Every image is decoded once here (pipeline.data.image_check), so a file whose header is
intact but whose pixels are not (a JPEG cut in half) is found before any stage runs, and stages never see it.
Never skipped: malformed label files, duplicate image ids, and paths that are absolute or contain `..` (an output
`<stem>.png` must stay inside its stage folder: stems never contain `/`).
Hidden files (names starting with '.') in the image folder are ignored.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from pipeline.config import DataConfig
from pipeline.data.image_check import check_images
from pipeline.io import IGNORE, image_size, load_mask, read_image
from pipeline.stage import Record

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(ValueError):
    """The data set on disk is not usable; the message names the file and says why."""


@dataclass(frozen=True)
class WeakDataset:
    root: Path
    records: tuple[Record, ...]
    classes: tuple[str, ...]  # classes[0] == "background"
    skipped: tuple[str, ...] = field(default=())  # "<file>: <reason>" for rows skipped under on_bad_image=skip


def load_weak_dataset(cfg: DataConfig, checked: Path | None = None) -> WeakDataset:
    """Read and validate the data set described by the `data:` config section, decoding every image once.

    `checked`: a cache file of the images that decoded (a run directory's `images_checked.json`), so that a rerun
    decodes only new or changed files."""
    root = Path(cfg.root)
    image_dir = root / cfg.images
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: image folder not found (data.root={cfg.root!r}, data.images={cfg.images!r})")
    skipped: list[str] = []

    def bad(message: str) -> None:
        if cfg.on_bad_image == "skip":
            skipped.append(message)
        else:
            raise DatasetError(message)

    if cfg.labels and not cfg.class_agnostic:
        rows = _read_labels_csv(root / cfg.labels)
    else:
        rows = [(p.relative_to(image_dir).as_posix(), _label_from_name(p, cfg), 0) for p in _list_images(image_dir)]
        if not cfg.class_agnostic and not cfg.label_pattern:
            raise DatasetError("data.labels is empty and data.label_pattern is not set: nowhere to read labels from")
    if cfg.class_agnostic:
        classes: tuple[str, ...] = ("background", "foreground")
    elif cfg.classes and (root / cfg.classes).is_file():
        classes = _read_classes(root / cfg.classes)
    elif cfg.classes and cfg.labels:
        raise DatasetError(f"{root / cfg.classes}: class list not found (set data.classes: '' to derive it)")
    else:
        classes = ("background", *sorted({label for _, label, _ in rows if label}))
    index = {name: i for i, name in enumerate(classes)}
    to_check = sorted({rel for rel, _, _ in rows if not _leaves(rel) and not _too_long(_stem(rel))})
    problems = dict(zip(to_check, check_images([image_dir / rel for rel in to_check], cfg.max_pixels, checked)))

    records: list[Record] = []
    seen: dict[str, str] = {}
    for rel, label, line in rows:
        where = f"{root / cfg.labels}:{line}" if line else str(image_dir / rel)
        if _leaves(rel):
            raise DatasetError(f"{where}: image path {rel!r} leaves {image_dir} (absolute paths, '..' and NUL are "
                               "not allowed)")
        stem = _stem(rel)
        if _too_long(stem):
            bad(f"{where}: image id {stem[:40]!r}... is too long for output file names (at most 251 bytes)")
            continue
        if problems[rel]:
            bad(f"{where}: {problems[rel]}")
            continue
        if stem in seen:
            raise DatasetError(f"{where}: duplicate image id {stem!r} (also {seen[stem]})")
        seen[stem] = rel
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
        records.append(Record(stem=stem, image=image_dir / rel, label=label_id, gt=gt if gt and gt.is_file() else None))

    if cfg.labels and not cfg.class_agnostic:
        labelled = {PurePosixPath(rel).as_posix() for rel, _, _ in rows}
        for p in _list_images(image_dir):
            rel = p.relative_to(image_dir).as_posix()
            if rel not in labelled:
                bad(f"{p}: image has no row in {root / cfg.labels}")
    if not records:
        raise DatasetError(f"{root}: the data set holds no usable images")
    return WeakDataset(root=root, records=tuple(records), classes=classes, skipped=tuple(skipped))


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


class PseudoLabelDataset(torch.utils.data.Dataset):
    """(image, pseudo-label) pairs for training: images from the records, masks `<mask_dir>/<stem>.png`.

    `transform(image, mask, rng)` moves both together (pipeline.data.transforms.TrainTransform); the engine passes an RNG derived from
    (seed, sample counter) to `get`, so augmentation is reproducible (see pipeline.learn.engine).
    """

    def __init__(self, records: tuple[Record, ...] | list[Record], mask_dir: Path, transform, max_pixels: int,
                 num_classes: int | None = None, foreground_only: bool = False):
        self.records, self.mask_dir, self.transform, self.max_pixels = list(records), Path(mask_dir), transform, max_pixels
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


def _read_labels_csv(path: Path) -> list[tuple[str, str, int]]:
    if not path.is_file():
        raise DatasetError(f"{path}: labels file not found")
    rows: list[tuple[str, str, int]] = []
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    line = 1
    try:
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["image", "label"]:
            raise DatasetError(f"{path}:1: expected the header 'image,label', got {header!r}")
        for row in reader:
            line = reader.line_num
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise DatasetError(f"{path}:{line}: expected 'image,label' (one label per image), got {row!r}")
            rows.append((row[0].strip(), row[1].strip(), line))
    except csv.Error as err:
        raise DatasetError(f"{path}:{line}: not valid CSV ({err})") from None
    return rows


def _read_text(path: Path) -> str:
    """UTF-8 text (a leading BOM dropped); DatasetError names the file, line and byte of invalid UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text (byte {err.start}: {err.reason})") from None


def _read_classes(path: Path) -> tuple[str, ...]:
    names = [line.strip() for line in _read_text(path).splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{path}: class list is empty")
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}: class names repeat")
    if len(names) > 255:
        raise DatasetError(f"{path}: {len(names)} classes do not fit uint8 masks (at most 255 with 255 = ignore)")
    return tuple(names)


def _list_images(image_dir: Path) -> list[Path]:
    return sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(image_dir).parts))


def _label_from_name(path: Path, cfg: DataConfig) -> str:
    if cfg.class_agnostic or not cfg.label_pattern:
        return ""
    try:
        match = re.search(cfg.label_pattern, path.stem)
    except re.error as err:
        raise DatasetError(f"data.label_pattern {cfg.label_pattern!r}: not a valid regular expression ({err})") from None
    if not match:
        raise DatasetError(f"{path}: file name does not match data.label_pattern {cfg.label_pattern!r}")
    if match.re.groups < 1:
        raise DatasetError(f"data.label_pattern {cfg.label_pattern!r}: needs a group (...) capturing the class name")
    return (match.group(1) or "").strip()


def _leaves(rel: str) -> bool:
    """A labels row's image path is absolute or has a '..' part or a NUL: it would leave the image folder."""
    return PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts or "\0" in rel


def _too_long(stem: str) -> bool:
    return len(f"{stem}.npz".encode()) > 255


def _stem(rel: str) -> str:
    """Output id of an image: its path below images/ without suffix, sub-folders joined by '__'."""
    return Path(rel).with_suffix("").as_posix().replace("/", "__")
