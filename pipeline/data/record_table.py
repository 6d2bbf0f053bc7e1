"""A data set's records in a SQLite file, so that no process holds one Python object per image.

    with RecordWriter(run_dir / "records.sqlite") as writer:   # written to a temp file, renamed on success
        writer.add(record)                                      # DuplicateStem names the other image
    table = writer.table                                        # a Sequence[Record], streamed from the file
    for record in table: ...                                    # insertion order, a few hundred rows at a time
    table[i], len(table), table.labels(), table.with_label(3), table.sorted_stems()

A `RecordTable` pickles as its path (and label filter), so a Ray task or a DataLoader worker receives a few bytes
instead of N records and opens the file itself; every process keeps one read-only connection (SQLite's page cache is
bounded, ~2 MB by default). The file must therefore be where every node reads it: the run directory, like every
stage's outputs. Stdlib `sqlite3` gives the index (label, position), uniqueness of the stems and ordered reads that a
flat file would need by hand.
"""
from __future__ import annotations

import os
import sqlite3
import tempfile
import weakref
from pathlib import Path
from typing import Iterator, Sequence, overload

from pipeline.stage import Record

FETCH_ROWS = 512  # rows read per round trip while streaming
COLUMNS = "stem, image, label, gt"
SCHEMA = """
CREATE TABLE records (id INTEGER PRIMARY KEY, stem TEXT NOT NULL UNIQUE, image TEXT NOT NULL, label INTEGER NOT NULL,
                      gt TEXT);
CREATE INDEX records_label ON records (label, id);
"""


class DuplicateStem(ValueError):
    """Two images map to the same output id; `other` is the image that has it already."""

    def __init__(self, stem: str, other: str):
        super().__init__(f"duplicate image id {stem!r} (also {other})")
        self.stem, self.other = stem, other


class RecordTable(Sequence[Record]):
    """The records in `path` (all, or those with `label`), read lazily; see the module docstring."""

    def __init__(self, path: Path | str, label: int | None = None):
        self.path, self.label = Path(path), label
        self._db: sqlite3.Connection | None = None
        self._pid = -1
        self._len: int | None = None
        self._owner: RecordTable | None = None

    def __reduce__(self):  # a few bytes through pickle; the receiver opens the file itself
        return RecordTable, (str(self.path), self.label)

    def _query(self, select: str, where: str = "", order: str = "", args: tuple = ()) -> sqlite3.Cursor:
        """`SELECT <select> FROM records [WHERE ...] [ORDER BY <order>]`, limited to `self.label` when set."""
        if self._db is None or self._pid != os.getpid():  # a forked DataLoader worker opens its own connection
            # immutable: the file is never changed in place (a rewrite replaces it), so readers take no locks,
            # which keeps it safe on NFS
            self._db = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro&immutable=1", uri=True,
                                       check_same_thread=False)
            self._pid = os.getpid()
        conditions = ([] if self.label is None else ["label = ?"]) + ([where] if where else [])
        sql = f"SELECT {select} FROM records" + (f" WHERE {' AND '.join(conditions)}" if conditions else "")
        return self._db.execute(sql + (f" ORDER BY {order}" if order else ""),
                                (() if self.label is None else (self.label,)) + args)

    def __len__(self) -> int:
        if self._len is None:
            self._len = self._query("COUNT(*)").fetchone()[0]
        return self._len

    def __iter__(self) -> Iterator[Record]:
        cursor = self._query(COLUMNS, order="id")
        while rows := cursor.fetchmany(FETCH_ROWS):
            yield from (_record(row) for row in rows)

    @overload
    def __getitem__(self, i: int) -> Record: ...
    @overload
    def __getitem__(self, i: slice) -> list[Record]: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"record {i} of {n}")
        if self.label is None:  # ids are 1..n in insertion order: a primary-key lookup
            return _record(self._query(COLUMNS, where="id = ?", args=(i % n + 1,)).fetchone())
        return _record(self._query(COLUMNS, order="id LIMIT 1 OFFSET ?", args=(i % n,)).fetchone())

    def labels(self) -> list[int]:
        """The distinct labels, ascending."""
        return [row[0] for row in self._query("DISTINCT label", order="label")]

    def with_label(self, label: int) -> RecordTable:
        """The records whose label is `label`, in the same order (read through the label index)."""
        view = RecordTable(self.path, label)
        view._owner = self  # a temporary table's file lives as long as its views
        return view

    def sorted_stems(self) -> Iterator[str]:
        """Every stem, in Python's string order (SQLite compares UTF-8 bytes: the same order), streamed."""
        cursor = self._query("stem", order="stem")
        while rows := cursor.fetchmany(FETCH_ROWS):
            yield from (row[0] for row in rows)

    def __repr__(self) -> str:
        return f"RecordTable({str(self.path)!r}{'' if self.label is None else f', label={self.label}'})"


def _record(row: tuple) -> Record:
    stem, image, label, gt = row
    return Record(stem=stem, image=Path(image), label=label, gt=Path(gt) if gt is not None else None)


class RecordWriter:
    """Builds a `RecordTable` at `path` (None: a temporary file removed with the table), atomically: rows go to a
    temporary file that replaces `path` only when the block ends without an exception."""

    def __init__(self, path: Path | None = None):
        if path is None:
            fd, name = tempfile.mkstemp(prefix="records-", suffix=".sqlite")
            os.close(fd)
            self.path, self.temporary = Path(name), True
        else:
            self.path, self.temporary = Path(path), False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._tmp.unlink(missing_ok=True)
        self._db = sqlite3.connect(self._tmp)
        self._db.executescript("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;" + SCHEMA +
                               # the load's notes, in a temporary file of their own (gone on close):
                               "ATTACH DATABASE '' AS scratch;"
                               "CREATE TABLE scratch.seen (rel TEXT PRIMARY KEY);"  # the labels file's image paths
                               "CREATE TABLE scratch.stems (stem TEXT PRIMARY KEY, rel TEXT);")  # ids taken, by what
        self.table: RecordTable | None = None

    def __enter__(self) -> RecordWriter:
        return self

    def add(self, record: Record) -> None:
        try:
            self._db.execute("INSERT INTO records (stem, image, label, gt) VALUES (?, ?, ?, ?)",
                             (record.stem, str(record.image), int(record.label),
                              None if record.gt is None else str(record.gt)))
        except sqlite3.IntegrityError:
            (other,) = self._db.execute("SELECT image FROM records WHERE stem = ?", (record.stem,)).fetchone()
            raise DuplicateStem(record.stem, other) from None

    def remember(self, rel: str) -> None:
        """Note an image path (a labels file's row), for `knows`: in the file rather than in memory."""
        self._db.execute("INSERT OR IGNORE INTO scratch.seen (rel) VALUES (?)", (rel,))

    def knows(self, rel: str) -> bool:
        return self._db.execute("SELECT 1 FROM scratch.seen WHERE rel = ?", (rel,)).fetchone() is not None

    def claim(self, stem: str, rel: str) -> str | None:
        """Reserve `stem` for image `rel`; returns the image that reserved it before (a duplicate id), else None."""
        other = self._db.execute("SELECT rel FROM scratch.stems WHERE stem = ?", (stem,)).fetchone()
        if other is None:
            self._db.execute("INSERT INTO scratch.stems (stem, rel) VALUES (?, ?)", (stem, rel))
        return None if other is None else other[0]

    @property
    def count(self) -> int:
        """Records added so far."""
        return self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self._db.commit()
        self._db.close()
        if kind is not None:
            self._tmp.unlink(missing_ok=True)
            if self.temporary:
                self.path.unlink(missing_ok=True)
            return
        os.replace(self._tmp, self.path)
        self.table = RecordTable(self.path)
        if self.temporary:
            weakref.finalize(self.table, os.unlink, self.path)


def label_groups(records: Sequence[Record]) -> Iterator[tuple[int, Sequence[Record]]]:
    """(label, its records in record order) for every label, ascending; a table answers through its label index,
    holding nothing per image, a list or tuple (tests, small sets) by grouping in memory."""
    if isinstance(records, RecordTable):
        return ((label, records.with_label(label)) for label in records.labels())
    groups: dict[int, list[Record]] = {}
    for r in records:
        groups.setdefault(r.label, []).append(r)
    return iter(sorted(groups.items()))


def sorted_stems(records: Sequence[Record]) -> Iterator[str]:
    """The records' stems in sorted order (a table streams them from its index)."""
    return records.sorted_stems() if isinstance(records, RecordTable) else iter(sorted(r.stem for r in records))


def write_records(records: Sequence[Record] | Iterator[Record], path: Path | None = None) -> RecordTable:
    """A `RecordTable` holding `records` (tests, benchmarks, anything that builds records by hand)."""
    with RecordWriter(path) as writer:
        for record in records:
            writer.add(record)
    assert writer.table is not None
    return writer.table
