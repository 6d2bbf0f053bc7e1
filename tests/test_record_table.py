"""The records of a run in a SQLite file (pipeline.data.record_table): the same records as a list, in the same
order, views by label, atomic writes, and a load whose memory does not grow with the number of images."""
from __future__ import annotations

import gc
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from bad_input_helpers import data_cfg
from pipeline.coarse.ddt import ddt_groups, stems_key
from pipeline.data.record_table import DuplicateStem, RecordWriter, label_groups, write_records
from pipeline.data.weak import load_weak_dataset
from pipeline.io import save_image
from pipeline.stage import Record, pending


def records(n: int) -> list[Record]:
    return [Record(f"s{i}", Path(f"/img/{i}.png"), i % 3 + 1, None if i % 2 else Path(f"/gt/{i}.png"))
            for i in range(n)]


def test_table_reads_back_the_records_in_order_with_views_by_label(tmp_path):
    want = records(10)
    table = write_records(want, tmp_path / "r.sqlite")
    assert list(table) == want and len(table) == 10
    assert table[3] == want[3] and table[-1] == want[9] and table[2:5] == want[2:5]
    with pytest.raises(IndexError):
        table[10]
    assert table.labels() == [1, 2, 3]
    two = table.with_label(2)  # s1, s4, s7
    assert list(two) == [want[1], want[4], want[7]] and len(two) == 3 and two[2] == want[7] and two[-3] == want[1]
    assert [(label, list(group)) for label, group in label_groups(table)] == \
        [(label, list(group)) for label, group in label_groups(want)]
    assert list(table.sorted_stems()) == sorted(r.stem for r in want)  # s0, s1, s10? no: s0..s9, string order
    assert [name for name, _ in ddt_groups(table, "label")] == ["label_1", "label_2", "label_3"]
    assert stems_key(two) == stems_key([want[1], want[4], want[7]])


def test_unicode_stems_sort_as_python_strings(tmp_path):
    stems = ["z", "é", "Z", "a b", "a", "日本", "a__b", "ab"]
    table = write_records([Record(s, Path(f"/{s}.png"), 1) for s in stems], tmp_path / "r.sqlite")
    assert list(table.sorted_stems()) == sorted(stems)


def test_table_pickles_as_its_path_and_reopens(tmp_path):
    table = write_records(records(1000), tmp_path / "r.sqlite")
    data = pickle.dumps(table.with_label(3))
    assert len(data) < 200  # not 1000 records
    copy = pickle.loads(data)
    assert list(copy) == [r for r in records(1000) if r.label == 3]


def test_duplicate_stem_names_the_other_image_and_nothing_is_left(tmp_path):
    path = tmp_path / "r.sqlite"
    with pytest.raises(DuplicateStem, match=r"duplicate image id 's1' \(also /img/1\.png\)"):
        write_records([*records(3), Record("s1", Path("/other.png"), 1)], path)
    assert list(tmp_path.iterdir()) == []  # no table, no temporary file


def test_a_failed_rewrite_keeps_the_previous_table(tmp_path):
    path = tmp_path / "r.sqlite"
    write_records(records(4), path)
    with pytest.raises(RuntimeError), RecordWriter(path) as writer:
        writer.add(records(1)[0])
        raise RuntimeError("stopped half way")
    assert [r.stem for r in write_records([], tmp_path / "empty.sqlite")] == []
    from pipeline.data.record_table import RecordTable
    assert len(RecordTable(path)) == 4 and sorted(p.name for p in tmp_path.iterdir()) == ["empty.sqlite", "r.sqlite"]


def test_a_temporary_table_goes_with_its_last_reference():
    table = write_records(records(3))
    path, view = table.path, table.with_label(1)
    del table
    gc.collect()
    assert [r.stem for r in view] == ["s0"]  # a view keeps the file
    del view
    gc.collect()
    assert not path.exists()


def test_pending_streams_and_counts_when_made(tmp_path):
    table = write_records(records(6), tmp_path / "r.sqlite")
    dst = tmp_path / "out"
    dst.mkdir()
    for stem in ("s0", "s3"):
        (dst / f"{stem}.png").write_bytes(b"")
    todo = pending(table, dst)
    assert len(todo) == 4 and [r.stem for r in todo] == ["s1", "s2", "s4", "s5"]
    (dst / "s4.png").write_bytes(b"")  # finished meanwhile: counted when made, not handed out again
    assert len(todo) == 4 and [r.stem for r in todo] == ["s1", "s2", "s5"]


def tiny_set(root: Path, n: int) -> Path:
    """`n` 4x4 photos in one folder (the layout of COCO's train2017), labels from the file names."""
    images = root / "images"
    images.mkdir(parents=True)
    pixels = np.zeros((4, 4, 3), np.uint8)
    for i in range(n):
        save_image(images / f"{'cat' if i % 2 else 'dog'}_{i:05d}.png", pixels)
    return root


def load_peak(root: Path) -> int:
    """Peak Python allocation (bytes) while loading `root` into a table and walking every record of it once the
    ways the stages do (stream, pending count, label groups)."""
    cfg = data_cfg(root, labels="", label_pattern=r"^([a-z]+)_")
    gc.collect()
    tracemalloc.start()
    try:
        dataset = load_weak_dataset(cfg, checked=root / "checked.sqlite", table=root / "records.sqlite")
        walked = sum(1 for _ in dataset.records) + len(pending(dataset.records, root / "none"))
        walked += sum(len(group) for _, group in label_groups(dataset.records))
        assert walked == 3 * len(dataset.records)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_loading_holds_nothing_per_image(tmp_path):
    """10x the images, the same peak: what grows with N lives in the SQLite files. (A list of Records costs
    ~800 bytes per image; the loader before the table held ~1.5 KB per image.)"""
    small, large = 600, 6000  # both above the loader's chunk of rows
    tiny_set(tmp_path / "small", small)
    tiny_set(tmp_path / "large", large)
    load_peak(tmp_path / "large")  # warm-up: imports, caches, and the interpreter's table of interned strings
    # (pathlib interns every file name; the table is sized once for the most names alive at a time, not per image)
    grown = load_peak(tmp_path / "large") - load_peak(tmp_path / "small")
    assert grown / (large - small) < 20, f"{grown / (large - small):.0f} bytes per image"
