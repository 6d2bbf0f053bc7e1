"""Which ImageNet classes a data set's label names: the class evidence of CAM without any fine-tuning.

    classes = label_classes_for("wordnet", dataset_classes)   # {label id: (ImageNet indices)}, from WordNet
    classes = label_classes_for("configs/imagenet_classes/coco.yaml", dataset_classes)   # the file over WordNet

`coarse.cam_imagenet_classes` is `wordnet` (each label's classes derived from WordNet: pipeline/coarse/wordnet.py)
or a YAML file whose entries replace the derived classes of the labels it names. Each entry maps a label name to a
list of ImageNet-1k classes, each written as
- a class name as torchvision lists it (`torchvision.models.EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"]`,
  e.g. `sports car`), or
- a class index 0..999, or
- an inclusive index range `[first, last]` (the 118 dog breeds are `[151, 268]`);
an empty list `[]` takes the label's derived classes away.

A label with no class gets no class evidence (stages/coarse.py: p = 0.5 everywhere; `unmapped_warning` says which).
The file may list more labels than a data set has (one file for all of COCO, used on a subset of its classes), but a
file that names none of the data set's labels is an error, and every entry is checked, whether or not its label is
present. Assumption (the source paper leaves class evidence open): ImageNet's classifier already knows most everyday
object classes, so a label's ImageNet classes give evidence from a CNN that never saw a pixel label, with no
training on the few images per label a weakly labelled set may have.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import yaml

from pipeline.config_io import ConfigError

NUM_IMAGENET_CLASSES = 1000
WORDNET = "wordnet"  # coarse.cam_imagenet_classes: every label's classes from WordNet, no file


def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet-1k class names in index order (from torchvision's metadata: no download)."""
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def _indices(item: object, where: str, by_name: dict[str, int]) -> list[int]:
    if isinstance(item, bool):
        raise ConfigError(f"{where}: {item!r} is not an ImageNet class name, index or [first, last] range")
    if isinstance(item, str):
        if item not in by_name:
            raise ConfigError(f"{where}: {item!r} is not an ImageNet class name (torchvision's category names)")
        return [by_name[item]]
    if isinstance(item, int):
        if not 0 <= item < NUM_IMAGENET_CLASSES:
            raise ConfigError(f"{where}: index {item} is outside 0..{NUM_IMAGENET_CLASSES - 1}")
        return [item]
    if (isinstance(item, list) and len(item) == 2 and all(isinstance(i, int) and not isinstance(i, bool) for i in item)
            and 0 <= item[0] <= item[1] < NUM_IMAGENET_CLASSES):
        return list(range(item[0], item[1] + 1))
    raise ConfigError(f"{where}: {item!r} is not an ImageNet class name, index or [first, last] range in 0..999")


def load_label_classes(path: str | Path, label_names: Sequence[str]) -> dict[int, tuple[int, ...]]:
    """{label id: sorted ImageNet indices, () for `[]`} from the mapping file at `path`; `label_names[i]` is label
    id i's name (index 0, background, is never mapped). Raises ConfigError (the CLI's one-line error) naming the
    file and the entry that is wrong."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: ImageNet class mapping not found (config key 'coarse.cam_imagenet_classes')") from None
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: not a readable YAML mapping: {err}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{path}: expected a mapping of label names to lists of ImageNet classes")
    by_name = {name: i for i, name in enumerate(imagenet_categories())}
    label_ids = {name: i for i, name in enumerate(label_names) if i > 0}
    mapping: dict[int, tuple[int, ...]] = {}
    for name, items in raw.items():
        where = f"{path}: label {name!r}"
        if not isinstance(items, list):
            raise ConfigError(f"{where}: expected a list of ImageNet classes ([] = none), got {items!r}")
        indices = tuple(sorted({i for item in items for i in _indices(item, where, by_name)}))
        if name in label_ids:
            mapping[label_ids[name]] = indices
    if not mapping:
        raise ConfigError(f"{path}: names none of the data set's {len(label_ids)} labels (e.g. "
                         f"{', '.join(sorted(label_ids)[:3])})")
    return mapping


def label_classes_for(value: str, label_names: Sequence[str]) -> dict[int, tuple[int, ...]]:
    """{label id: sorted ImageNet indices} for `coarse.cam_imagenet_classes: <value>`: each label's classes derived
    from WordNet, then, unless `value` is `wordnet`, those of the file `value` for the labels it names. Labels with
    no class are left out."""
    from pipeline.coarse.wordnet import label_classes

    mapping = {i: label_classes(name) for i, name in enumerate(label_names) if i > 0}
    if value != WORDNET:
        mapping.update(load_label_classes(value, label_names))
    return {i: classes for i, classes in mapping.items() if classes}


def unmapped_warning(mapping: dict[int, tuple[int, ...]], label_names: Sequence[str], value: str) -> str | None:
    """One line naming every label (id >= 1) that `mapping` gives no ImageNet class; None when there is none."""
    missing = [name for i, name in enumerate(label_names) if i > 0 and not mapping.get(i)]
    if not missing:
        return None
    return (f"warning: {len(missing)} of {len(label_names) - 1} labels name no ImageNet class "
            f"(coarse.cam_imagenet_classes: {value}), so their class evidence is 0.5 everywhere: {', '.join(missing)}")
