"""Ray helpers: one cluster per run, per-image tasks with bounded in-flight work, one device task for training
(or, with two GPUs or more, `training_workers` of Ray Train). The networks' sharded passes are in `sharded.py`.

Every function here also runs without Ray (`ray.enabled: false`), serially in this process, so stages are
debuggable and serial/parallel results can be compared. Large arrays never travel through Ray's object store:
a task receives file paths, reads its inputs, writes its outputs and returns a small dict.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from pipeline.config import RayConfig

IN_FLIGHT_PER_CPU = 2  # per-image tasks queued per cluster CPU: busy workers, driver memory bounded for any N
TASK_RETRIES = 3  # re-runs of a task whose worker died (a node lost, out of memory)


@contextmanager
def ray_session(cfg: RayConfig) -> Iterator[bool]:
    """Join the cluster at `cfg.address` / RAY_ADDRESS, or start a local one and shut it down at exit.

    Yields True when Ray is in use. If Ray is already initialised (a test session's shared cluster, a user's
    notebook) that cluster is used and left running.
    """
    if not cfg.enabled:
        yield False
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if ray.is_initialized():
        yield True
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS", "")
    common = dict(log_to_driver=False, logging_level="ERROR", configure_logging=True)
    if address:
        ray.init(address=address, **common)
    else:
        os.makedirs(cfg.temp_dir, exist_ok=True)
        ray.init(num_cpus=cfg.num_cpus or None, _temp_dir=cfg.temp_dir, include_dashboard=False, **common)
    try:
        yield True
    finally:
        ray.shutdown()


def ray_active() -> bool:
    """Ray is imported and initialised in this process (inside `ray_session`, or a test's shared cluster)."""
    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized()


def eta(elapsed: float, done: int, total: int) -> str:
    """Remaining time at the rate so far, e.g. "50s" ("?" before any progress)."""
    return f"{elapsed / done * (total - done):.0f}s" if done > 0 else "?"


class Progress:
    """A one-line progress report with rate and ETA, written to stderr (no dependency on a terminal)."""

    def __init__(self, desc: str, total: int, every_s: float = 2.0):
        self.desc, self.total, self.every_s = desc, total, every_s
        self.done, self.start, self.last = 0, time.time(), 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.time()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            end = "\n" if self.done == self.total else ""
            print(f"\r  {self.desc}: {self.done}/{self.total} ({rate:.1f}/s, ETA {eta:.0f}s)   ", end=end,
                  file=sys.stderr, flush=True)


def stream_tasks(fn: Callable[..., Any], items: Iterable[Any], total: int, cfg: RayConfig, desc: str,
                 num_cpus: float = 1.0, memory_mb: int | None = None, num_gpus: float = 0) -> Iterator[Any]:
    """Yield `fn(item)` for every item as the tasks finish (item order without Ray; Ray: completion order).

    `items` is read lazily and `total` is its length (for the progress line), so a caller streaming N records and
    folding the results holds O(1) of them: with Ray at most IN_FLIGHT_PER_CPU x the cluster's CPUs tasks are
    submitted at once, each declaring `num_cpus`, `num_gpus` and `memory_mb` (default `cfg.task_memory_mb`), retried
    TASK_RETRIES times if its worker dies. An exception raised by `fn` is re-raised here (Ray's error type subclasses
    the original) and the tasks still in flight are cancelled.
    """
    progress = Progress(desc, total)
    if not (cfg.enabled and ray_active()):
        for item in items:
            yield fn(item)
            progress.update()
        return

    import ray

    cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
    limit = max(2, IN_FLIGHT_PER_CPU * cluster_cpus)
    memory = (memory_mb if memory_mb is not None else cfg.task_memory_mb) * 2**20
    options: dict[str, Any] = dict(num_cpus=num_cpus, max_retries=TASK_RETRIES)
    if num_gpus:
        options["num_gpus"] = num_gpus
    if memory:
        options["memory"] = memory
    remote_fn = ray.remote(fn).options(**options)
    source = iter(items)
    in_flight: list[Any] = []
    try:
        while True:
            while len(in_flight) < limit and (item := next(source, _END)) is not _END:
                in_flight.append(remote_fn.remote(item))
            if not in_flight:
                return
            ready, in_flight = ray.wait(in_flight, num_returns=1)
            result = ray.get(ready[0])
            progress.update()
            yield result
    finally:  # an error (or a caller that stopped early): nothing keeps running behind its back
        for ref in in_flight:
            ray.cancel(ref, force=True)


_END = object()  # end of stream_tasks' items


def map_tasks(fn: Callable[..., Any], items: Sequence[Any], cfg: RayConfig, desc: str,
              num_cpus: float = 1.0, memory_mb: int | None = None, num_gpus: float = 0) -> list[Any]:
    """`fn(item)` for every item of a short list (label groups, a test's items), results in item order: `stream_tasks`
    over (index, item) pairs. Per-image stages stream instead, so the driver never holds a result per image."""
    items = list(items)
    results: list[Any] = [None] * len(items)
    indexed = stream_tasks(_indexed, [(fn, i, item) for i, item in enumerate(items)], len(items), cfg, desc,
                           num_cpus=num_cpus, memory_mb=memory_mb, num_gpus=num_gpus)
    for i, result in indexed:
        results[i] = result
    return results


def _indexed(job: tuple[Callable[..., Any], int, Any]) -> tuple[int, Any]:
    fn, i, item = job
    return i, fn(item)


def run_on_device(fn: Callable[..., Any], *args: Any, cfg: RayConfig,
                  progress: Callable[[float], str] | None = None) -> Any:
    """Run `fn(*args)` as one Ray task holding a GPU if the cluster has one, else all CPUs of its largest node.

    While it runs, `progress(elapsed_seconds)` (e.g. "train: iteration 40/120, ETA 80s", read from the task's output
    files) is shown every 2 s, since the task's own prints stay in Ray's worker logs. Without Ray it simply calls `fn(*args)` here.
    """
    if not (cfg.enabled and ray_active()):
        return fn(*args)
    import ray

    # One task cannot span nodes: ask for a GPU if any node has one, else the CPUs of the largest node.
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(r.get("GPU", 0) >= 1 for r in nodes):
        options: dict[str, Any] = dict(num_gpus=1, num_cpus=1)
    else:
        options = dict(num_cpus=max([1] + [int(r.get("CPU", 0)) for r in nodes]))
    ref = ray.remote(fn).options(max_retries=TASK_RETRIES, **options).remote(*args)
    start = time.time()
    while not ray.wait([ref], timeout=2.0)[0]:
        if progress is not None:
            print(f"\r  {progress(time.time() - start)}   ", end="", file=sys.stderr, flush=True)
    if progress is not None:
        print(f"\r  {progress(time.time() - start)}   ", file=sys.stderr, flush=True)
    return ray.get(ref)


def cluster_resources(cfg: RayConfig) -> dict[str, float]:
    """The Ray cluster's total resources ({"CPU": 8.0, "GPU": 2.0, ...}); empty without Ray."""
    if not (cfg.enabled and ray_active()):
        return {}
    import ray

    return dict(ray.cluster_resources())


def training_workers(resources: Mapping[str, float]) -> tuple[int, bool]:
    """(workers, use_gpu) for a round's training on a cluster with `resources` (see `cluster_resources`): one Ray
    Train worker per GPU when there are two or more, else one device task (the GPU if there is one)."""
    gpus = int(resources.get("GPU", 0))
    return (gpus, True) if gpus >= 2 else (1, gpus == 1)
