"""Security: no unsafe deserialisation or code evaluation in the source tree, and outputs confined to their folder.

The scan parses every .py file under pipeline/, stages/, benchmarks/ and orchestrate.py with `ast` (comments and
strings cannot trigger it) and flags: yaml.load / load_all / full_load / unsafe_load without a safe Loader,
torch.load without `weights_only=True`, eval( / exec( / compile(, pickle / cPickle / dill / marshal / shelve loads,
np.load with `allow_pickle=True`, and subprocess calls with `shell=True` / os.system.
"""
from __future__ import annotations

import ast
import csv
import io
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipeline.config import DataConfig
from pipeline.io import save_mask
from pipeline.data.weak import DatasetError, load_weak_dataset

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ["pipeline", "stages", "benchmarks", "orchestrate.py"]
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}


def _dotted(node: ast.AST) -> str:
    """'np.load' for np.load, 'torch.load' for torch.load, '' for anything that is not a plain dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_calls(source: str, filename: str = "<string>") -> list[str]:
    """'file:line: reason' for every unsafe call in `source`."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(n and n.split(".")[0] in PICKLE_MODULES for n in names):
                found.append(f"{filename}:{node.lineno}: imports a pickle-style module ({', '.join(filter(None, names))})")
            continue
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        last = name.rsplit(".", 1)[-1]
        where = f"{filename}:{node.lineno}: {name}("
        if name in ("eval", "exec", "compile", "__import__", "builtins.eval", "builtins.exec"):
            found.append(f"{where} evaluates code")
        elif name.startswith("yaml.") and last in ("load", "load_all", "full_load", "full_load_all", "unsafe_load",
                                                  "unsafe_load_all"):
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if last not in ("load", "load_all") or _dotted(loader).rsplit(".", 1)[-1] not in SAFE_YAML_LOADERS:
                found.append(f"{where} without a safe Loader (use yaml.safe_load)")
        elif name == "torch.load" or name.endswith(".torch.load"):
            if not _is_const(_keyword(node, "weights_only"), True):
                found.append(f"{where} without weights_only=True")
        elif name in ("np.load", "numpy.load"):
            if not _is_const(_keyword(node, "allow_pickle") or ast.Constant(False), False):
                found.append(f"{where} with allow_pickle not False")
        elif name.split(".")[0] in PICKLE_MODULES and last in ("load", "loads", "Unpickler", "open"):
            found.append(f"{where} unpickles data")
        elif name in ("os.system", "os.popen"):
            found.append(f"{where} runs a shell")
        elif name.startswith("subprocess.") and _is_const(_keyword(node, "shell"), True):
            found.append(f"{where} with shell=True")
    return found


def source_files() -> list[Path]:
    files = []
    for entry in SCANNED:
        path = ROOT / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def test_scanner_flags_every_unsafe_pattern():
    bad = """
import yaml, torch, pickle, numpy as np, subprocess, os
yaml.load(text)
yaml.load(text, Loader=yaml.Loader)
yaml.unsafe_load(text)
yaml.full_load(text)
torch.load(path)
torch.load(path, weights_only=False)
eval("1 + 1")
exec("x = 1")
pickle.loads(blob)
np.load(path, allow_pickle=True)
subprocess.run(cmd, shell=True)
os.system(cmd)
"""
    found = unsafe_calls(bad)
    assert [int(f.split(":")[1]) for f in found] == list(range(2, 15)), found
    good = """
import yaml, torch, numpy as np
yaml.safe_load(text)
yaml.load(text, Loader=yaml.SafeLoader)
torch.load(path, map_location="cpu", weights_only=True)
np.load(path)
np.load(path, allow_pickle=False)
model.eval()
text = "eval(torch.load(x)) and yaml.load(y)"  # strings and comments: eval( pickle.load(
"""
    assert unsafe_calls(good) == []


def test_source_tree_has_no_unsafe_calls():
    files = source_files()
    assert len(files) > 20 and ROOT / "orchestrate.py" in files  # the scan really covers the tree
    found = [f for path in files for f in unsafe_calls(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert found == []


def test_torch_and_numpy_loads_in_tree_are_all_checked():
    """Every torch.load / np.load call the scan saw carries the safe keyword (so the scan is not vacuous)."""
    calls = []
    for path in source_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and _dotted(node.func) in ("torch.load", "np.load"):
                calls.append((_dotted(node.func), path.name))
    assert {name for name, _ in calls} == {"torch.load", "np.load"}


# ---------------------------------------------------------------------------------------------------------------
# outputs confined to their folder

def _data_set(root: Path, names: list[str], rows: list[str]) -> DataConfig:
    for name in names:
        path = root / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path, format="PNG")
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text("image,label\n" + "".join(f"{r}\n" for r in rows), encoding="utf-8")
    return DataConfig(root=str(root), classes="", masks="")


@pytest.mark.parametrize("row", ["../escape.png", "../../tmp/escape.png", "sub/../../escape.png", "./../escape.png",
                                 "/etc/passwd", "//etc/passwd", "sub/./../../escape.png"])
def test_traversal_rows_are_rejected_even_when_skipping(tmp_path, row):
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "escape.png")  # the target exists
    cfg = _data_set(tmp_path / "set", ["a.png", "sub/b.png"], ["a.png,cat", "sub/b.png,cat", f'"{row}",dog'])
    for mode in ("error", "skip"):
        with pytest.raises(DatasetError, match=r"labels\.csv:4: image path .* leaves .*/set/images"):
            load_weak_dataset(DataConfig(**{**cfg.__dict__, "on_bad_image": mode}))


segment = st.text(st.characters(exclude_characters="/", exclude_categories=["Cs", "Cc", "Zs", "Zl", "Zp"]),
                  min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@example(parts=[".."])
@example(parts=["a", "..", ".."])
@example(parts=["a", ".", "b"])
@example(parts=[".", "é ü"])
@given(parts=st.lists(st.one_of(segment, st.sampled_from([".", "..", "...", "..a", "a.."])), min_size=0, max_size=3))
def test_stems_never_leave_the_stage_folder(tmp_path_factory, parts):
    """Any relative path in a labels file is either rejected (it has a '..' part) or yields a stem without '/' whose
    output file, once written, is a direct child of the stage folder."""
    rel = "/".join([*parts, "x.png"])
    root = tmp_path_factory.mktemp("stems")
    traversal = ".." in PurePosixPath(rel).parts
    names = [] if traversal else [rel]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([["image", "label"], [rel, "cat"]])
    cfg = _data_set(root, names, buf.getvalue().splitlines()[1:])
    if traversal:
        with pytest.raises(DatasetError, match=r"labels\.csv:2: image path .* leaves"):
            load_weak_dataset(cfg)
        return
    ds = load_weak_dataset(cfg)
    assert len(ds.records) == 1 and ds.skipped == ()
    stem = ds.records[0].stem
    assert "/" not in stem and "\x00" not in stem
    dst = root / "run" / "crf"
    save_mask(dst / f"{stem}.png", np.zeros((2, 2), np.uint8))
    assert [p.relative_to(dst).parts for p in (root / "run").rglob("*.png")] == [(f"{stem}.png",)]
