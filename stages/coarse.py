"""Stage `coarse`: a foreground probability per image from image-level labels only (the first stage of a run).

    summary = run(ctx, src=None, dst=run_dir / "coarse")

For every record this writes `dst/<stem>.npz` = save_probs([1 - p, p], class_ids=[0, record.label]), p being the
foreground probability at the image's full resolution, and then `dst/<stem>.png` = soft_to_mask(...) with
`coarse.fg_threshold` / `coarse.bg_threshold` (between the two: 255, ignored by training).

`coarse.method` picks the method in METHODS, one line per method: each is a module of pipeline/coarse/ whose
`method(setting)` describes it in the one shape of pipeline/coarse/method.py, so a new method is one module and one
line here.
- `saliency`: weight-free superpixel saliency, one CPU task per image.
- `ddt`, `cam`, `isnet`: a network per image, after what needs a whole group: DDT's statistics (one device task per
  label group), CAM's classifier fine-tuned on all labels (one task on a whole device); ISNet needs none.
- `fusion`: the geometric mean of the maps of the methods in `coarse.fusion`.
- `steered`: ISNet's salient objects, those the label's class evidence (`coarse.evidence`) points at; `objects` in
  the evidence is a network pass of its own (each salient object's crop classified, pipeline/coarse/objects.py).

How a method runs (`_run_method`), for the records still pending in its folder:
1. its parts, each a method of its own writing into `dst/_parts/<name>/` (same file contract, so each part resumes
   on its own);
2. its group work (`map_on_devices`, or `run_on_device` for work that holds a whole device);
3. per image, either a network pass sharded over the cluster's devices (`pipeline.orchestration.sharded`): CPU tasks
   decode the image, read its parts and `prepare` the inputs (`read_inputs`), actors on every GPU (or on CPUs) run
   the network one image per forward pass (`MapNetwork`), CPU tasks `finish` the score into the probability and
   write the files (`write_maps`); or one CPU task per image (`stream_tasks`, `image_task`).
Without Ray the same steps run in this process and write the same bytes.

Resuming: an image whose `dst/<stem>.png` exists is skipped (`pipeline.stage.pending`). Group methods keep their
per-group results (DDT mean / principal component per label, CAM classifier weights) as small files under
`dst/_ddt` / `dst/_cam`, so a resumed run reuses them instead of redoing them.
Class-agnostic data (`data.class_agnostic`) arrives with every record labelled 1; DDT then forms one group of all
images (or per-image groups with `coarse.ddt_groups: image`). Every method is deterministic for a fixed `run.seed`.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from pipeline.coarse import cam, ddt, fusion, objects, saliency, salient, steered
from pipeline.coarse.method import Method, MethodSetting, NetworkPass, Parts
from pipeline.config import CoarseConfig, Config
from pipeline.io import IGNORE, load_probs, read_image, save_mask, save_probs
from pipeline.labels import soft_to_mask
from pipeline.orchestration.parallel import run_on_device, stream_tasks
from pipeline.orchestration.sharded import Batch, InferencePass, batch_records, map_on_devices, run_inference
from pipeline.stage import StageContext, pending

METHODS: dict[str, Callable[[MethodSetting], Method]] = {  # coarse.method (or a part's name) -> the method
    "saliency": saliency.method,
    "ddt": ddt.method,
    "cam": cam.method,
    "isnet": salient.method,
    "fusion": fusion.method,
    "steered": steered.method,
    "objects": objects.method,  # only as evidence of `steered`: it classifies the objects of the isnet part
}
INPUT = "input_"  # prefix of the batch columns holding a network's inputs (one column per keyword)


def write_coarse(dst: Path, stem: str, label: int, prob: np.ndarray, cfg: CoarseConfig) -> np.ndarray:
    """Write `dst/<stem>.npz` (probs [1 - p, p] over [0, label]) then `dst/<stem>.png`; returns the mask."""
    prob = np.clip(np.asarray(prob, np.float32), 0.0, 1.0)
    probs = np.stack([1.0 - prob, prob])
    class_ids = np.array([0, label], np.int32)
    save_probs(dst / f"{stem}.npz", probs, class_ids)
    # Threshold the map as stored (uint8-rounded) so the .png always agrees with what the next stage reads.
    stored, _ = load_probs(dst / f"{stem}.npz")
    mask = soft_to_mask(stored, class_ids, cfg.fg_threshold, cfg.bg_threshold)
    save_mask(dst / f"{stem}.png", mask)  # written last: marks the image done
    return mask


def _mask_stats(stem: str, mask: np.ndarray) -> dict:
    """Small per-image summary: share of confident foreground and of ignored pixels."""
    return {"stem": stem, "fg": float(((mask != 0) & (mask != IGNORE)).mean()), "ignore": float((mask == IGNORE).mean())}


def read_parts(parts_dir: str, names: tuple[str, ...], stem: str, image: str) -> Parts:
    """One image's part maps by name: the foreground probability of `parts_dir/<name>/<stem>.npz`."""
    maps = {}
    for name in names:
        path = Path(parts_dir) / name / f"{stem}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: coarse part {name!r} missing for image {image}")
        maps[name] = load_probs(path)[0][1]
    return maps


@dataclass(frozen=True)
class ImageJob:
    """Everything a per-image CPU task needs: small and picklable, no arrays."""

    stem: str
    image: str  # path of the RGB image
    label: int  # the image's class id (>= 1)
    dst: str  # folder receiving <stem>.npz then <stem>.png
    coarse: CoarseConfig
    max_pixels: int  # data.max_pixels: refuse larger images
    per_image: Callable[[np.ndarray | None, Parts], np.ndarray]  # the method's per-image function
    reads_image: bool  # decode the image for `per_image`
    parts_dir: str  # folder holding each part's folder
    parts: tuple[str, ...]  # the parts `per_image` reads


def image_task(job: ImageJob) -> dict:
    """Per-image CPU task: the method's probability of one image into `job.dst`."""
    image = read_image(job.image, job.max_pixels) if job.reads_image else None
    prob = job.per_image(image, read_parts(job.parts_dir, job.parts, job.stem, job.image))
    return _mask_stats(job.stem, write_coarse(Path(job.dst), job.stem, job.label, prob, job.coarse))


def read_inputs(batch: Batch, prepare: Callable[[np.ndarray, Parts], dict], parts_dir: str, parts: tuple[str, ...],
                max_pixels: int) -> Batch:
    """CPU step of a network pass: decode each row's image, read its parts and `prepare` the network's inputs."""
    inputs, heights, widths = [], [], []
    for path, stem in zip(batch["path"], batch["stem"]):
        image = read_image(path, max_pixels)
        inputs.append(prepare(image, read_parts(parts_dir, parts, stem, path)))
        heights.append(image.shape[0])
        widths.append(image.shape[1])
    columns = {INPUT + key: [row[key] for row in inputs] for key in (inputs[0] if inputs else ())}
    return {**batch, **columns, "height": np.array(heights), "width": np.array(widths)}


class MapNetwork:
    """Device step of a network pass: `network()` (built once per actor) maps each row's inputs to a score map."""

    def __init__(self, network: Callable[[], Callable[..., np.ndarray]]):
        self.network = network()

    def __call__(self, batch: Batch) -> Batch:
        keys = [key for key in batch if key.startswith(INPUT)]
        scores = [self.network(record=record, **{key.removeprefix(INPUT): batch[key][i] for key in keys})
                  for i, record in enumerate(batch_records(batch))]
        return {**{k: v for k, v in batch.items() if k not in keys}, "score": scores}


def write_maps(batch: Batch, finish: Callable[[np.ndarray, tuple[int, int]], np.ndarray], dst: str,
               cfg: CoarseConfig) -> Batch:
    """CPU step of a network pass: `finish` each score map into the image's probability, then `write_coarse`."""
    stats = []
    for record, score, h, w in zip(batch_records(batch), batch["score"], batch["height"], batch["width"]):
        mask = write_coarse(Path(dst), record.stem, record.label, finish(np.asarray(score), (int(h), int(w))), cfg)
        stats.append(_mask_stats(record.stem, mask))
    return {"stem": batch["stem"], "fg": np.array([s["fg"] for s in stats]),
            "ignore": np.array([s["ignore"] for s in stats])}


def _inference_pass(network: NetworkPass, cfg: Config, dst: Path, parts_dir: Path,
                    parts: tuple[str, ...]) -> InferencePass:
    """A method's network pass as the sharded executor's three steps."""
    load = partial(read_inputs, prepare=network.prepare, parts_dir=str(parts_dir), parts=parts,
                   max_pixels=cfg.data.max_pixels)
    return InferencePass(load=load, model=partial(MapNetwork, network.network),
                         write=partial(write_maps, finish=network.finish, dst=str(dst), cfg=cfg.coarse))


def _sum_stats(results: Iterable[dict]) -> dict[str, float]:
    """{"images": n, "fg": sum, "ignore": sum} of per-image `_mask_stats` results, folded as they arrive."""
    sums = {"images": 0, "fg": 0.0, "ignore": 0.0}
    for r in results:
        sums["images"] += 1
        sums["fg"] += r["fg"]
        sums["ignore"] += r["ignore"]
    return sums


def _call(task: Callable[[object], object], item: object) -> object:
    """`task(item)`: a plain function for `run_on_device` (Ray makes tasks of functions, not of partials)."""
    return task(item)


def _run_method(name: str, ctx: StageContext, root: Path, dst: Path,
                label_classes: dict[int, tuple[int, ...]] | None, within: tuple[str, ...] = ()) -> dict[str, float]:
    """Run method `name` for the records still pending in `dst`: its parts (into `root/_parts/<part>/`), its group
    work, then its per-image work. Returns the summed mask statistics {"images", "fg", "ignore"}. `within`: the
    methods whose parts are being made (a method cannot be its own part)."""
    if name not in METHODS or name in within:
        raise ValueError(f"coarse: {name!r} is not a coarse method here (choose from {', '.join(METHODS)}; a method "
                         f"cannot be its own part: {' -> '.join(within + (name,))})")
    dst.mkdir(parents=True, exist_ok=True)
    todo = pending(ctx.records, dst)
    if not todo:
        return {"images": 0}
    cfg = ctx.cfg
    method = METHODS[name](MethodSetting(coarse=cfg.coarse, records=ctx.records, todo=todo, dst=dst,
                                         num_classes=len(ctx.classes), max_pixels=cfg.data.max_pixels,
                                         seed=cfg.run.seed, label_classes=label_classes))
    parts_dir = root / "_parts"
    for part in method.parts:
        _run_method(part, ctx, root, parts_dir / part, label_classes, within + (name,))
    work = method.group_work
    if work is not None and work.whole_device:
        for item in work.items:
            run_on_device(_call, work.task, item, cfg=cfg.ray)
    elif work is not None:
        map_on_devices(work.task, work.items, cfg.ray, desc=work.desc)
    desc = f"coarse {name}"
    if method.network is not None:
        return run_inference(_inference_pass(method.network, cfg, dst, parts_dir, method.parts), todo, cfg.ray, desc)
    jobs = (ImageJob(stem=r.stem, image=str(r.image), label=int(r.label), dst=str(dst), coarse=cfg.coarse,
                     max_pixels=cfg.data.max_pixels, per_image=method.per_image, reads_image=method.reads_image,
                     parts_dir=str(parts_dir), parts=tuple(dict.fromkeys(method.parts))) for r in todo)
    return _sum_stats(stream_tasks(image_task, jobs, len(todo), cfg.ray, desc=desc))


def run(ctx: StageContext, src: None, dst: Path) -> dict:
    """Write every pending record's coarse map into `dst`; returns images done/skipped, seconds, fg/ignore shares."""
    start = time.time()
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    cfg = ctx.cfg
    for r in ctx.records:
        if r.label < 1 or r.label >= len(ctx.classes):
            raise ValueError(f"{r.image}: label {r.label} is not a foreground class id 1..{len(ctx.classes) - 1}")
    label_classes = None  # each label's ImageNet classes, read here so a bad file stops the stage at once
    if cfg.coarse.cam_imagenet_classes:
        from pipeline.coarse.imagenet_classes import label_classes_for, unmapped_warning

        label_classes = label_classes_for(cfg.coarse.cam_imagenet_classes, ctx.classes)
        warning = unmapped_warning(label_classes, ctx.classes, cfg.coarse.cam_imagenet_classes)
        if warning:
            print(f"[coarse] {warning}", file=sys.stderr, flush=True)
    skipped = len(ctx.records) - len(pending(ctx.records, dst))
    sums = _run_method(cfg.coarse.method, ctx, dst, dst, label_classes)
    images = int(sums["images"])
    return {
        "method": cfg.coarse.method,
        "images": images,
        "skipped": skipped,
        "seconds": round(time.time() - start, 2),
        "mean_fg_fraction": round(sums["fg"] / images, 4) if images else 0.0,
        "mean_ignore_fraction": round(sums["ignore"] / images, 4) if images else 0.0,
    }
