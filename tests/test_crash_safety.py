"""Crash safety of every writer: a full disk (ENOSPC at any step) or a SIGKILL mid-write leaves the target as the old
or the complete new file, never a partial one, and (on ENOSPC) no temp file; the error names the target."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import io as pio
from pipeline.io import atomic_write_bytes, load_probs, save_image, save_mask, save_probs, write_json


def _enospc(*_args: object, **_kw: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class _FullDiskFile:
    """A file object whose write fails like a full disk (after the temp file was created)."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        _enospc()


WRITERS = {
    "bytes": lambda p: atomic_write_bytes(p, b"new content"),
    "json": lambda p: write_json(p, {"new": 1}),
    "mask": lambda p: save_mask(p, np.ones((4, 4), np.uint8)),
    "probs": lambda p: save_probs(p, np.full((2, 4, 4), 0.5), [0, 1]),
    "image": lambda p: save_image(p, np.zeros((4, 4, 3), np.uint8)),
}


@pytest.mark.parametrize("where", ["write", "fsync", "rename"])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_full_disk_leaves_old_target_and_no_temp_file(tmp_path, monkeypatch, writer, where):
    old = tmp_path / "out" / "existing.bin"
    old.parent.mkdir()
    old.write_bytes(b"older complete file")
    fresh = tmp_path / "out" / "fresh.bin"
    if where == "write":
        real_fdopen = os.fdopen
        monkeypatch.setattr(pio.os, "fdopen", lambda fd, mode: _FullDiskFile(real_fdopen(fd, mode)))
    elif where == "fsync":
        monkeypatch.setattr(pio.os, "fsync", _enospc)
    else:
        monkeypatch.setattr(pio.os, "replace", _enospc)
    for target in (old, fresh):
        with pytest.raises(OSError, match=rf"{target.name}: cannot write \(No space left on device\)") as info:
            WRITERS[writer](target)
        assert info.value.errno == errno.ENOSPC
    assert old.read_bytes() == b"older complete file"
    assert not fresh.exists()
    assert sorted(p.name for p in old.parent.iterdir()) == ["existing.bin"]  # no temp file left behind


def test_full_disk_when_creating_the_temp_file(tmp_path, monkeypatch):
    monkeypatch.setattr(pio.tempfile, "mkstemp", _enospc)
    with pytest.raises(OSError, match=r"a\.png: cannot write \(No space left on device\)"):
        save_mask(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    assert list(tmp_path.iterdir()) == []


KILLED_WRITER = """
import sys, numpy as np
from pipeline.io import save_probs
target = sys.argv[1]
big = [np.full((3, 300, 300), v, np.float32) for v in (0.2, 0.8)]
print("ready", flush=True)
i = 0
while True:
    save_probs(target, big[i % 2], [0, 1, 2])
    i += 1
"""


def test_killed_writer_leaves_old_or_new_file(tmp_path):
    """SIGKILL a process rewriting one soft map in a loop: the target always loads and is one complete version."""
    target = tmp_path / "a.npz"
    save_probs(target, np.full((3, 300, 300), 0.2, np.float32), [0, 1, 2])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    for delay in (0.05, 0.13, 0.31):
        proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], stdout=subprocess.PIPE, env=env)
        assert proc.stdout.readline().strip() == b"ready"
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()
        proc.wait()
        probs, class_ids = load_probs(target)
        assert class_ids.tolist() == [0, 1, 2]
        assert np.unique(probs).tolist() in ([np.float32(51 / 255)], [np.float32(204 / 255)])
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "a.npz"]
    assert all(n.startswith(".a.npz.") and n.endswith(".tmp") for n in leftovers)  # a kill may leave a hidden temp
