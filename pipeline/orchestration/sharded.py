"""Sharded, batched neural inference on Ray Data: CPU tasks read and write files, an actor pool holds the devices.

    job = InferencePass(load=partial(read, ...), model=partial(make_predictor, ...), write=partial(save, ...))
    sums = run_inference(job, records, cfg.ray, desc="predict")   # {"images": n, column: its sum over the rows}

A pass is three functions over batches (dicts of columns, e.g. {"stem": [...], "path": [...], "label": [...]}):

- `load` reads and decodes the rows' images and resizes them for the network (Ray Data tasks, CPU);
- `model()` runs once per actor (it loads the network) and returns the device step, which maps the loaded inputs
  to the network's outputs (`map_batches` over a fixed actor pool);
- `write` turns those outputs into the stage's files (`<stem>.npz`, then `<stem>.png`) and returns a few numbers
  per row, among them "stem" (Ray Data tasks, CPU).

So devices never wait on files, and the driver holds only the positions of the pending records (8 bytes each; a
CPU task reads their rows from the run's RecordTable) and running sums of the summaries: images and maps stream
through Ray's object store under Ray Data's backpressure. Only the rows still pending enter a pass, so
a killed pass resumes per image like every other stage.

Actors (`inference_actors`): one per GPU (num_gpus=1) when the cluster has GPUs; otherwise `ray.actors` CPU actors
(0 = one per node), each declaring an equal share of its node's CPUs after FILE_CPUS for the file tasks. The file
tasks also declare `ray.task_memory_mb`, so their resources differ from the actors' and Ray Data does not fuse them
into the actors (which would make a device decode files). Only with `ray.task_memory_mb: 0` and a CPU share of
exactly FILE_CPUS would it fuse reading into CPU actors: the same results, without the overlap.

Sharding pays when there are several devices to fill: a cluster with GPUs or with several nodes, or `ray.actors`
set. On a single CPU-only node (`ray.actors: 0`) the three functions run instead in one device task holding the
node's CPUs (`run_on_device`), which spares the actors' start-up and keeps the driver light.

Without Ray (`ray.enabled: false`) the same three functions run in this process, `ray.images_per_call` rows at a
time. The device steps predict one image per forward pass, so an image's output never depends on which images
share its batch, and `ray.images_per_call` only sets how many rows one call handles. Serial and sharded runs thus
write the same bytes when their networks run with the same number of torch threads: CPU kernels split their sums
by thread count. A CPU actor runs its CPU share rounded up, so one actor per node uses all of the node's cores, as
a serial run on that node does by default.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from pipeline.config import RayConfig
from pipeline.orchestration.parallel import Progress, map_tasks, ray_active, run_on_device
from pipeline.stage import Pending, Record

Batch = dict[str, Any]  # column -> numpy array (or a list of arrays of varying shapes)
FILE_CPUS = 0.5  # CPUs each read / write task declares: decoding and encoding are light next to the network


@dataclass(frozen=True)
class InferencePass:
    """The three steps of one sharded pass (see the module docstring); each must be picklable."""

    load: Callable[[Batch], Batch]
    model: Callable[[], Callable[[Batch], Batch]]
    write: Callable[[Batch], Batch]


@dataclass(frozen=True)
class ActorPlan:
    """How many inference actors, and what each one holds."""

    actors: int
    num_cpus: float
    num_gpus: float
    threads: int  # torch threads inside each actor


def inference_actors(nodes: Sequence[Mapping[str, float]], requested: int = 0) -> ActorPlan:
    """The actor pool for the alive nodes' resources (`ray.nodes()[i]["Resources"]`) and `ray.actors` (0 = auto).

    GPUs anywhere: one actor per GPU (at most `requested`, when set), each with one GPU and one CPU. No GPU:
    `requested` actors, or one per node, spread evenly; each declares (smallest node's CPUs - FILE_CPUS) / actors
    per node, so the file tasks can always run beside them, and runs torch on that share rounded up (one actor per
    node: all its cores, as a serial run does, while the light file tasks take the rest of a core)."""
    gpus = sum(int(n.get("GPU", 0)) for n in nodes)
    if gpus:
        return ActorPlan(actors=min(requested, gpus) if requested else gpus, num_cpus=1, num_gpus=1, threads=1)
    cpu_nodes = [n.get("CPU", 0.0) for n in nodes if n.get("CPU", 0.0) >= 1]
    if not cpu_nodes:
        raise RuntimeError("the Ray cluster has no node with a CPU or a GPU to run inference on")
    actors = requested or len(cpu_nodes)
    share = (min(cpu_nodes) - FILE_CPUS) / math.ceil(actors / len(cpu_nodes))
    return ActorPlan(actors=actors, num_cpus=share, num_gpus=0, threads=math.ceil(share))


def cluster_actors(cfg: RayConfig) -> ActorPlan:
    """`inference_actors` for the running cluster's alive nodes (Ray must be initialised)."""
    import ray

    return inference_actors([n["Resources"] for n in ray.nodes() if n.get("Alive")], cfg.actors)


def map_on_devices(fn: Callable[[Any], Any], items: Sequence[Any], cfg: RayConfig, desc: str) -> list[Any]:
    """`fn(item)` for every item, each as one Ray task holding what an inference actor holds (a GPU, or a share of a
    node's CPUs), for the work a pass needs first (e.g. DDT's statistics, one task per label group); results in
    item order. Serial here without Ray."""
    if not (cfg.enabled and ray_active()):
        return map_tasks(fn, items, cfg, desc)
    plan = cluster_actors(cfg)
    return map_tasks(_with_threads, [(fn, plan.threads, item) for item in items], cfg, desc,
                     num_cpus=plan.num_cpus, num_gpus=plan.num_gpus, memory_mb=0)


def _with_threads(job: tuple[Callable[[Any], Any], int, Any]) -> Any:
    import torch

    fn, threads, item = job
    torch.set_num_threads(threads)
    return fn(item)


def record_rows(records: Iterable[Record]) -> Iterator[dict]:
    """The small rows of a pass, made lazily: stem, image path and label of each record."""
    return ({"stem": r.stem, "path": str(r.image), "label": int(r.label)} for r in records)


def _positions(records: Sequence[Record]) -> tuple[Sequence[Record], np.ndarray]:
    """(the sequence to index, the positions of `records` in it): a `Pending` subset is found in its records."""
    if isinstance(records, Pending):
        return records.records, np.fromiter((i for i, _ in records.indexed()), dtype=np.int64)
    return records, np.arange(len(records), dtype=np.int64)


def rows_at(batch: Batch, records: Sequence[Record]) -> Batch:
    """The rows (`record_rows`) of the records at the batch's positions ("data"): a RecordTable pickles as its
    path, so each task opens the table instead of receiving the rows."""
    return to_batch(list(record_rows(records[int(i)] for i in batch["data"])))


def batch_records(batch: Batch) -> list[Record]:
    """The records of a batch's rows (see `record_rows`)."""
    return [Record(str(stem), Path(str(path)), int(label))
            for stem, path, label in zip(batch["stem"], batch["path"], batch["label"])]


def replace_columns(batch: Batch, drop: str, **columns: Any) -> Batch:
    """`batch` without column `drop` (a step's consumed input), plus `columns` (its outputs)."""
    return {**{k: v for k, v in batch.items() if k != drop}, **columns}


def to_batch(rows: Sequence[Mapping[str, Any]]) -> Batch:
    """Rows (dicts with the same keys) -> one batch of columns, as Ray Data hands them to a step."""
    return {key: np.array([row[key] for row in rows]) for key in rows[0]}


class _DeviceActor:
    """A Ray Data actor: builds the device step once (the model on its GPU or CPUs), then maps batches with it."""

    def __init__(self, model: Callable[[], Callable[[Batch], Batch]], threads: int):
        import torch

        torch.set_num_threads(threads)
        self.step = model()

    def __call__(self, batch: Batch) -> Batch:
        return self.step(batch)


def run_inference(job: InferencePass, records: Sequence[Record], cfg: RayConfig, desc: str) -> dict[str, float]:
    """Run `job` over the rows of `records` (`record_rows`); returns the sums of `write`'s numeric summary columns
    over all rows, plus "images" (rows written). Summaries are folded as batches finish, so the driver keeps nothing
    per image beyond the records it was given.

    With Ray: load -> device actors -> write on Ray Data; an exception raised by a step is re-raised here (Ray's
    error type subclasses the original). Without Ray: the same steps here, `cfg.images_per_call` rows at a time."""
    if not records:
        return {"images": 0}
    if cfg.enabled and ray_active() and not shard(cfg):  # one CPU node: the whole pass in one device task
        return run_on_device(_in_process, job, records, cfg.images_per_call, desc, cfg=cfg)
    if cfg.enabled and ray_active():
        batches = _sharded(job, records, cfg)
    else:
        batches = _serial(job, record_rows(records), cfg.images_per_call)
    return _fold(batches, len(records), desc)


def shard(cfg: RayConfig) -> bool:
    """Whether a pass runs sharded on Ray Data: `ray.actors` set, or the cluster has GPUs or several nodes."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return cfg.actors > 0 or len(nodes) > 1 or any(r.get("GPU", 0) >= 1 for r in nodes)


def _serial(job: InferencePass, rows: Iterable[Mapping[str, Any]], size: int) -> Iterator[Batch]:
    """The pass in this process, `size` rows at a time."""
    step = job.model()
    source = iter(rows)
    while chunk := list(itertools.islice(source, size)):
        yield job.write(step(job.load(to_batch(chunk))))


def _in_process(job: InferencePass, records: Sequence[Record], size: int, desc: str) -> dict[str, float]:
    """The serial pass as one task: the summed summaries (progress goes to the task's log)."""
    return _fold(_serial(job, record_rows(records), size), len(records), desc)


def _fold(batches: Iterator[Batch], total: int, desc: str) -> dict[str, float]:
    """Sum the numeric columns of `write`'s summary batches (every column but "stem") as they finish, with a
    progress line; "images" counts the rows."""
    progress = Progress(desc, total)
    sums: dict[str, float] = {"images": 0}
    for batch in batches:
        count = len(batch["stem"])
        for key, values in batch.items():
            if key != "stem":
                sums[key] = sums.get(key, 0) + np.asarray(values).sum().item()
        sums["images"] += count
        progress.update(count)
    return sums


def _sharded(job: InferencePass, records: Sequence[Record], cfg: RayConfig) -> Iterator[Batch]:
    """The pass on Ray Data; yields `write`'s summary batches as they finish."""
    import ray.data

    plan = cluster_actors(cfg)
    size = cfg.images_per_call
    base, positions = _positions(records)  # the driver keeps 8 bytes per image; a CPU task looks the rows up
    blocks = math.ceil(len(positions) / size)
    actors = min(plan.actors, blocks)  # no actor without a batch to work on
    file_task = dict(num_cpus=FILE_CPUS, memory=cfg.task_memory_mb * 2**20 or None)
    ds = ray.data.from_numpy(np.array_split(positions, blocks))
    del positions
    ds = ds.map_batches(partial(rows_at, records=base), batch_size=size, **file_task)
    ds = ds.map_batches(job.load, batch_size=size, **file_task)
    ds = ds.map_batches(_DeviceActor, fn_constructor_args=(job.model, plan.threads), batch_size=size,
                        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=plan.num_cpus,
                        num_gpus=plan.num_gpus or None)
    ds = ds.map_batches(job.write, batch_size=size, **file_task)
    context = ds.context  # this dataset's own copy: nothing global changes
    context.enable_progress_bars = False  # run_inference reports progress itself
    context.print_on_execution_start = False
    context.enable_auto_log_stats = False
    context.raise_original_map_exception = True  # a step's error reaches the caller as its own type
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")
