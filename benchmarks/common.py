"""What the benchmarks share: process memory read from /proc, a warm-up + median timer, and the scoring subsets.

Scripts run as `python benchmarks/<name>.py` import it as `common` (the script's folder is first on sys.path); the
tests import it, and the scripts, the same way (pytest's `pythonpath` in pyproject.toml names benchmarks/).
- Memory: `processes()` reads every process once; `tree_rss`, `named` and `descendants` pick from that table;
  `PeakSampler` keeps the peak of any such figures while a block runs; `run_sampled` runs a command under one.
- Time: `interleaved_times` times several calls in turns after a warm-up; `median_seconds` is its one-call case.
- Scores: the tune half and the report half of a run's images (`halves`), the large instances (`LARGE_SHARE`),
  and the mean per-image score over each of those subsets (`subset_means`), as the weak results are reported.
- Command line: `arguments` (--help prints the docstring and every default); `fail` and `require` end a script
  with one line and exit status 2 on a missing input, as the CLI does.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping, NoReturn

import numpy as np

REPO = Path(__file__).resolve().parent.parent  # the repository root: configs/, orchestrate.py
MIB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")  # bytes per page: /proc's RSS unit
TICK = os.sysconf("SC_CLK_TCK")  # clock ticks per second: /proc's CPU-time unit
LARGE_SHARE = 0.10  # share of the photo an instance covers to count as large: there small ones stop dominating


def arguments(doc: str) -> argparse.ArgumentParser:
    """A parser whose --help prints the script's docstring `doc` as written and every option's default."""

    class Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        pass

    return argparse.ArgumentParser(description=doc, formatter_class=Help)


def fail(message: str) -> NoReturn:
    """Exit with status 2 and `message` as one line on stderr, as the CLI does for a missing input."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def require(path: Path, what: str) -> Path:
    """`path` when it exists; else `fail` with one line naming it and what it should be."""
    if not Path(path).exists():
        fail(f"{path}: not found ({what})")
    return Path(path)


# ---- memory -------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Process:
    """One row of /proc, as the memory and CPU figures need it."""

    parent: int
    rss: int  # bytes
    cpu_seconds: float  # user + system
    cmdline: bytes  # NUL-separated arguments; b"ray::..." for a Ray worker busy with a task or actor


def processes() -> dict[int, Process]:
    """Every process in /proc that can be read now (one that exits while it is read is left out)."""
    table = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        table[int(name)] = Process(parent=int(fields[1]), rss=int(fields[21]) * PAGE,
                                   cpu_seconds=(int(fields[11]) + int(fields[12])) / TICK, cmdline=cmdline)
    return table


def descendants(table: Mapping[int, Process], roots: Iterable[int]) -> set[int]:
    """`roots` (those in `table`) and every process below them."""
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.parent, []).append(pid)
    found, todo = set(), [pid for pid in roots if pid in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def named(table: Mapping[int, Process], text: str) -> set[int]:
    """Processes whose command line contains `text` (e.g. a Ray cluster's --temp-dir: its GCS, raylets, agents)."""
    return {pid for pid, proc in table.items() if text.encode() in proc.cmdline}


def tree_rss(roots: Iterable[int], table: Mapping[int, Process] | None = None) -> int:
    """Summed RSS (bytes) of `roots` and all their descendants."""
    table = processes() if table is None else table
    return sum(table[pid].rss for pid in descendants(table, roots))


def peak_rss(pid: int | str = "self") -> int:
    """The process's own peak RSS so far (VmHWM, bytes); 0 once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakSampler:
    """Calls `sample()` every `every_s` seconds in a thread while the `with` block runs; `peaks` holds each key's
    largest value (e.g. {"all": tree RSS, "driver": VmHWM})."""

    def __init__(self, sample: Callable[[], Mapping[str, float]], every_s: float) -> None:
        self.sample, self.every_s = sample, every_s
        self.peaks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for key, value in self.sample().items():
                self.peaks[key] = max(self.peaks.get(key, value), value)
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_sampled(cmd: list[str], sample: Callable[[int], Mapping[str, float]],
                every_s: float) -> tuple[float, dict[str, float], int]:
    """Run `cmd` from the repository root: (seconds, the peaks of `sample(its pid)`, exit code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO)
    with PeakSampler(lambda: sample(proc.pid), every_s) as sampler:
        code = proc.wait()
    return time.perf_counter() - start, sampler.peaks, code


# ---- time ---------------------------------------------------------------------------------------------------------

def interleaved_times(calls: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1,
                      sync: Callable[[], object] | None = None) -> dict[str, list[tuple[float, float]]]:
    """Per call, (wall, process CPU) seconds of `repeats` timed runs after `warmup` untimed ones. The calls take
    turns run by run, so load from other processes hits all alike; `sync` (e.g. torch.cuda.synchronize) runs
    before each clock starts and before it stops, so queued device work is counted."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    for step in range(warmup + repeats):
        for name, call in calls.items():
            if sync:
                sync()
            wall, cpu = time.perf_counter(), time.process_time()
            call()
            if sync:
                sync()
            if step >= warmup:
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def median_seconds(call: Callable[[], object], repeats: int, warmup: int = 1,
                   sync: Callable[[], object] | None = None) -> float:
    """Median wall seconds of `call` over `repeats` runs after `warmup` untimed ones."""
    return statistics.median(wall for wall, _ in interleaved_times({"": call}, repeats, warmup, sync)[""])


# ---- scores -------------------------------------------------------------------------------------------------------

def halves(stems: Iterable[str]) -> tuple[set[str], set[str]]:
    """(tune half, report half): the sorted ids at even and at odd positions. Settings are chosen on the first and
    reported on the second; COCO-MVal's ids start with the class name, so both halves hold every class."""
    ordered = sorted(stems)
    return set(ordered[0::2]), set(ordered[1::2])


def foreground_share(foreground: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Share of the scored pixels (`valid`; all by default) that are ground-truth foreground."""
    valid = np.ones(foreground.shape, bool) if valid is None else valid
    return float(foreground[valid].sum() / max(int(valid.sum()), 1))


def subset_means(per_image: Mapping[str, float | None], split: tuple[set[str], set[str]] | None = None,
                 large: set[str] | None = None) -> dict[str, float]:
    """Mean per-image score over "all" images, the "tune" and the "report" half (`split`; by default the halves of
    `per_image`'s ids) and, given the ids of the large instances, over "large" and "report large" (nan for an empty
    subset; images without a score are left out)."""
    tune, report = split or halves(per_image)
    subsets = {"all": set(per_image), "tune": tune, "report": report}
    if large is not None:
        subsets.update({"large": large, "report large": large & report})
    means = {}
    for name, stems in subsets.items():
        values = [v for k, v in per_image.items() if k in stems and v is not None]
        means[name] = float(np.mean(values)) if values else float("nan")
    return means
