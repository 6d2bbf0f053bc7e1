"""Any label name -> ImageNet-1k classes, derived from WordNet 3.0 (`coarse.cam_imagenet_classes: wordnet`).

    label_classes("airplane")      # (404,): airliner, the one ImageNet class WordNet puts under airplane
    label_classes("dogs")          # the 118 dog breeds, 151..268

ImageNet's 1,000 classes are WordNet noun synsets (ImageNet's wnid = "n" + WordNet 3.0's noun offset), so a label
names ImageNet classes through WordNet: its noun synsets, every hyponym below them (transitively, instance hyponyms
included) and every hypernym above them, kept where they are ImageNet classes. Below: a dog's breeds; above: a
"tennis racket" is a kind of ImageNet's "racket". A name is looked up
1. normalised: lower case, spaces and hyphens -> `_` ("Sports car" -> sports_car), also closed up ("cell phone"
   -> cellphone, as WordNet spells many compounds);
2. as WordNet's morphy does for nouns: the word itself, noun.exc's exceptions ("geese" -> goose), then the suffix
   rules s, ses, xes, zes, ches, shes, men, ies ("dogs" -> dog), each kept where it is a lemma.
Every sense of a name counts (WordNet has no context to choose one: "kite" is also ImageNet's bird). A name WordNet
lacks ("potted plant") maps to nothing; a file given as `coarse.cam_imagenet_classes` overrides the labels it names
(pipeline/coarse/imagenet_classes.py). What each choice scored on COCO-MVal: docs/experiments.md.

The table (wordnet_data/imagenet_wordnet.tsv, WordNet's licence in wordnet_data/LICENSE) holds the synsets that
are ImageNet classes, their ancestors and their descendants, which is all this lookup can reach; it is written by
`python -m pipeline.coarse.wordnet_build` and read once per process. Nothing is fetched at run time.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping

TABLE = Path(__file__).parent / "wordnet_data" / "imagenet_wordnet.tsv"  # the shipped table (package data)
# WordNet's morphy suffix rules for nouns, (suffix, replacement), in its order
NOUN_SUFFIX_RULES = (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
                     ("men", "man"), ("ies", "y"))


@dataclass(frozen=True)
class WordNetTable:
    """The part of WordNet's noun hierarchy around ImageNet's classes (see `read_table`)."""
    synsets: Mapping[str, tuple[str, ...]]  # lemma -> the offsets of the synsets it names
    hyponyms: Mapping[str, tuple[str, ...]]  # offset -> its direct (instance) hyponyms' offsets
    hypernyms: Mapping[str, tuple[str, ...]]  # offset -> its direct (instance) hypernyms' offsets
    imagenet: Mapping[str, int]  # offset -> ImageNet-1k class index, for the 1,000 classes
    plurals: Mapping[str, tuple[str, ...]]  # noun.exc: inflected form -> its base forms


def read_table(path: str | Path = TABLE) -> WordNetTable:
    """Parse a table written by pipeline/coarse/wordnet_build.py (`synset` and `plural` rows, `#` comments)."""
    path = Path(path)
    synsets: dict[str, list[str]] = {}
    hyponyms: dict[str, list[str]] = {}
    hypernyms: dict[str, tuple[str, ...]] = {}
    imagenet: dict[str, int] = {}
    plurals: dict[str, list[str]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise FileNotFoundError(f"{path}: the WordNet table is missing ({err.strerror}); "
                                "python -m pipeline.coarse.wordnet_build writes it") from None
    for number, line in enumerate(lines, 1):
        fields = line.split("\t")
        if line.startswith("#") or not line:
            continue
        if fields[0] == "synset" and len(fields) == 5:
            _, offset, index, links, lemmas = fields
            hypernyms[offset] = tuple(links.split()) if links != "-" else ()
            for hypernym in hypernyms[offset]:
                hyponyms.setdefault(hypernym, []).append(offset)
            for lemma in lemmas.split():
                synsets.setdefault(lemma, []).append(offset)
            if index != "-":
                imagenet[offset] = int(index)
        elif fields[0] == "plural" and len(fields) == 3:
            plurals.setdefault(fields[1], []).append(fields[2])
        else:
            raise ValueError(f"{path}:{number}: not a `synset` (5 fields) or `plural` (3 fields) row: {line[:80]!r}")
    freeze = lambda d: MappingProxyType({k: tuple(v) for k, v in d.items()})  # noqa: E731
    return WordNetTable(freeze(synsets), freeze(hyponyms), MappingProxyType(hypernyms), MappingProxyType(imagenet),
                        freeze(plurals))


@lru_cache(maxsize=1)
def shipped_table() -> WordNetTable:
    """The table shipped with the package, read once per process."""
    return read_table(TABLE)


def normalise(name: str) -> str:
    """Lower case, runs of spaces and hyphens -> one `_` ("Hot-Dog  stand" -> "hot_dog_stand")."""
    return "_".join(name.lower().replace("-", " ").split())


def base_forms(word: str, table: WordNetTable) -> tuple[str, ...]:
    """WordNet's morphy for a noun (normalised): the word, its noun.exc bases, then its suffix-rule bases, in that
    order, each once and only where it is a lemma of the table."""
    candidates = [word, *table.plurals.get(word, ())]
    candidates += [word[: len(word) - len(suffix)] + ending for suffix, ending in NOUN_SUFFIX_RULES
                   if word.endswith(suffix) and len(word) > len(suffix)]
    return tuple(form for form in dict.fromkeys(candidates) if form in table.synsets)


def reachable(start: Iterable[str], links: Mapping[str, tuple[str, ...]]) -> set[str]:
    """Every node reachable from `start` along `links` (start included)."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(links.get(node, ()))
    return seen


def label_classes(name: str, table: WordNetTable | None = None) -> tuple[int, ...]:
    """Sorted ImageNet-1k indices that label `name` names through WordNet (module docstring); () when none."""
    table = shipped_table() if table is None else table
    word = normalise(name)
    forms = dict.fromkeys(base_forms(word, table) + base_forms(word.replace("_", ""), table))
    start = tuple(offset for form in forms for offset in table.synsets[form])
    reached = reachable(start, table.hyponyms) | reachable(start, table.hypernyms)
    return tuple(sorted(table.imagenet[offset] for offset in reached if offset in table.imagenet))
