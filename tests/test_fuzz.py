"""Property-based fuzzing (hypothesis) of the two text parsers a user feeds directly.

- config loader: any YAML document or override string gives a Config or ConfigError, never another exception;
  any valid override (a real key with a value inside its type/range/choices) lands in the Config unchanged.
- labels file parser: any bytes in labels.csv / classes.txt give a WeakDataset or DatasetError, never another
  exception; in a generated CSV (quotes, commas, unicode, BOM, CRLF, blank lines, padding) every valid row comes back
  exactly, in order, and bad rows are skipped (`on_bad_image: skip`) or raise DatasetError as predicted.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import typing
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.config import Config, ConfigError, DataConfig, load_config
from pipeline.data.weak import DatasetError, load_weak_dataset

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])
SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
SECTION_TYPES = typing.get_type_hints(Config)


# ---------------------------------------------------------------------------------------------------------------
# config loader

def _field_names() -> list[str]:
    return sorted({f.name for cls in SECTION_TYPES.values() for f in dataclasses.fields(cls)})


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-10**400, max_value=10**400),
                    st.floats(), st.text(max_size=20), st.sampled_from(["lite0", "saliency", "skip", "1e-3", "~"]))
keys = st.one_of(st.sampled_from(sorted(SECTIONS) + _field_names() + ["base"]), st.text(max_size=10),
                 st.integers(-3, 3), st.booleans(), st.none())
yaml_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
documents = st.one_of(
    st.dictionaries(st.sampled_from(sorted(SECTIONS) + ["base"]), yaml_values, max_size=4),  # plausible
    st.dictionaries(keys, yaml_values, max_size=4),  # any mapping
    yaml_values,  # any document
)


def _dump(value: object) -> str:
    return yaml.safe_dump(value, allow_unicode=True, default_flow_style=None)


@FUZZ
@given(doc=st.one_of(documents.map(_dump), st.text(max_size=200)), data=st.data())
def test_any_yaml_document_gives_config_or_config_error(tmp_path, doc, data):
    path = tmp_path / "fuzz.yaml"
    if data.draw(st.booleans()):
        path.write_text(doc, encoding="utf-8")
    else:
        path.write_bytes(doc.encode("utf-8", "replace")[: data.draw(st.integers(0, 400))])  # maybe cut mid-character
    try:
        cfg = load_config(path)
    except ConfigError as err:
        assert str(err)
    else:
        assert isinstance(cfg, Config)


@FUZZ
@given(items=st.lists(st.one_of(st.text(max_size=40),
                                st.tuples(st.sampled_from([f"{s}.{f.name}" for s, c in SECTION_TYPES.items()
                                                           for f in dataclasses.fields(c)]),
                                          yaml_values.map(lambda v: _dump(v).strip())).map("=".join)),
                      max_size=4))
def test_any_override_gives_config_or_config_error(items):
    try:
        cfg = load_config(None, items)
    except ConfigError as err:
        assert str(err)
    else:
        assert isinstance(cfg, Config)


def _valid_value(hint: object, meta: dict) -> st.SearchStrategy:
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return st.lists(_valid_value(args[0], {}), max_size=3)
        return st.tuples(*(_valid_value(a, {}) for a in args)).map(list)
    if meta.get("choices"):
        return st.sampled_from(meta["choices"])
    lo, hi = meta.get("range", (None, None))
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(int(lo) if lo is not None else -10**6, int(hi) if hi is not None else 10**9)
    if hint is float:
        lo_f = float(lo) if lo is not None else -1e9
        return st.floats(lo_f, float(hi) if hi is not None else lo_f + 1e9, allow_nan=False, allow_infinity=False)
    assert hint is str, hint
    return st.text(max_size=30)


@st.composite
def valid_override(draw) -> tuple[str, str, object]:
    section = draw(st.sampled_from(sorted(SECTION_TYPES)))
    cls = SECTION_TYPES[section]
    field = draw(st.sampled_from(dataclasses.fields(cls)))
    hint = typing.get_type_hints(cls)[field.name]
    value = draw(_valid_value(hint, dict(field.metadata)))
    return section, field.name, value


def _yaml_literal(value: object) -> str:
    """One-line YAML for an override value; strings double-quoted with every non-ASCII or control character escaped
    (PyYAML's own plain-scalar output does not always read back: '\\xa00' loads as the int 0)."""
    if isinstance(value, str):
        return '"' + "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else f"\\U{ord(c):08x}" for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_literal(v) for v in value) + "]"
    return yaml.safe_dump(value).removesuffix("\n...\n").strip()


@FUZZ
@given(overrides=st.lists(valid_override(), min_size=1, max_size=5, unique_by=lambda o: o[:2]))
def test_valid_overrides_round_trip_into_config(overrides):
    items = [f"{s}.{k}={_yaml_literal(v)}" for s, k, v in overrides]
    chosen = {(s, k): v for s, k, v in overrides}  # the rules across keys (load_config's last checks):
    assume(chosen.get(("data", "gt_foreground_value"), -1) not in chosen.get(("data", "gt_ignore_values"), [255]))
    assume(not chosen.get(("coarse", "cam_imagenet_classes")) or chosen.get(("coarse", "cam_epochs"), 10) == 0)
    # the lists of the method in use name known methods (test_coarse.py): random strings there are refused
    assume(not (chosen.get(("coarse", "method")) == "fusion" and ("coarse", "fusion") in chosen))
    assume(not (chosen.get(("coarse", "method")) == "steered" and ("coarse", "evidence") in chosen))
    assume("isnet" not in chosen.get(("coarse", "fusion"), ()))  # an old steering config: refused
    cfg = load_config(None, items)
    for section, key, value in overrides:
        got = getattr(getattr(cfg, section), key)
        expected = tuple(value) if isinstance(value, list) else value
        assert got == expected and type(got) is type(expected), (section, key, got, expected)
        if isinstance(got, float):
            assert math.isfinite(got)


def test_fuzz_found_cases_stay_fixed(tmp_path):
    """Inputs the fuzzers found raising something other than ConfigError before the fixes."""
    for text in ["train:\n  1: 2\n  a: 3\n", "run:\n  name: 2001-02-30\n", "train:\n  lr: .nan\n",
                 "train:\n  lr: " + "9" * 400 + "\n", "base: \"a\\0b\"\n", "[" * 5000, "train:\n"]:
        (tmp_path / "f.yaml").write_text(text)
        try:
            load_config(tmp_path / "f.yaml", ["train.iterations=3"])
        except ConfigError:
            pass
    (tmp_path / "f.yaml").write_bytes(b"run: {name: \xff}\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(tmp_path / "f.yaml")


# ---------------------------------------------------------------------------------------------------------------
# labels file parser

IMAGES = ["a.png", "b c.png", "é/ü 1.png", "x,y.png", 'q"t.png', "sub/deep/z.jpg"]
CLASSES = ("background", "cat", "dog", "naïve class", "a,b")


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fuzz_set")
    for name in IMAGES:
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path)
    return root


def _load(root: Path, labels: bytes, classes: bytes | None, **kw: object):
    (root / "labels.csv").write_bytes(labels)
    if classes is None:
        (root / "classes.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    else:
        (root / "classes.txt").write_bytes(classes)
    return load_weak_dataset(DataConfig(root=str(root), masks="", **kw))


@FUZZ
@given(labels=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                        st.text(max_size=300).map(lambda t: ("image,label\n" + t).encode())),
       classes=st.one_of(st.none(), st.binary(max_size=60)), skip=st.booleans())
def test_any_labels_bytes_give_dataset_or_dataset_error(image_root, labels, classes, skip):
    try:
        ds = _load(image_root, labels, classes, on_bad_image="skip" if skip else "error")
    except DatasetError as err:
        assert str(err)
    else:
        assert ds.records and all("/" not in r.stem for r in ds.records)


garbage_text = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=40)


@st.composite
def labels_document(draw) -> tuple[bytes, list[tuple[str, int]] | None]:
    """A labels.csv and what load_weak_dataset must return for it (None: it must raise DatasetError)."""
    fail = False
    header = draw(st.sampled_from([["image", "label"], [" Image ", "LABEL"], ["image", "label", "extra"], None,
                                   ["img", "label"]]))
    fail |= header is None or header[0] == "img"
    chosen = draw(st.lists(st.sampled_from(IMAGES), unique=True, max_size=len(IMAGES)))
    rows, expected = [], []
    for name in chosen:
        label = draw(st.integers(1, len(CLASSES) - 1))
        pad = draw(st.sampled_from(["", " ", "  \t"]))
        rows.append([pad + name + pad, CLASSES[label] + pad])
        expected.append((str(PurePosixPath(name).with_suffix("")).replace("/", "__"), label))
    for _ in range(draw(st.integers(0, 4))):  # garbage rows: missing images, odd field counts, traversal
        row = draw(st.lists(garbage_text, min_size=0, max_size=3))
        if len(row) == 2 and row[0].strip() and row[1].strip():
            row[0] = "missing-" + row[0].strip()
            parts = PurePosixPath(row[0]).parts
            fail |= ".." in parts
        elif any(cell.strip() for cell in row):
            fail |= True  # a row that is not 'image,label' is an error, never skipped
        rows.insert(draw(st.integers(0, len(rows))), row)
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])),
                        lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    if header is not None:
        writer.writerow(header)
    for row in rows:
        writer.writerow(row)
        if draw(st.integers(0, 4)) == 0:
            buf.write(draw(st.sampled_from(["\n", "\r\n", " \n", ",\n"])))  # blank-ish lines are skipped
    text = buf.getvalue()
    bom = "\ufeff" if draw(st.booleans()) else ""
    fail |= not expected
    return (bom + text).encode("utf-8"), None if fail else expected


@FUZZ
@given(doc=labels_document())
def test_generated_labels_file_valid_rows_come_back_exactly(image_root, doc):
    data, expected = doc
    try:
        ds = _load(image_root, data, None, on_bad_image="skip")
    except DatasetError:
        assert expected is None, data
        return
    assert expected is not None, data
    assert [(r.stem, r.label) for r in ds.records] == expected
    listed = {s for s, _ in expected}
    unlisted = [n for n in IMAGES if str(PurePosixPath(n).with_suffix("")).replace("/", "__") not in listed]
    assert sum("image has no row" in s for s in ds.skipped) == len(unlisted)
