"""Stage `coarse`: a foreground probability per image from image-level labels only (the first stage of a run).

    summary = run(ctx, src=None, dst=run_dir / "coarse")

For every record this writes `dst/<stem>.npz` = save_probs([1 - p, p], class_ids=[0, record.label]), p being the
foreground probability at the image's full resolution, and then `dst/<stem>.png` = soft_to_mask(...) with
`coarse.fg_threshold` / `coarse.bg_threshold` (between the two: 255, ignored by training). `coarse.method`:

- `saliency`: per-image, one Ray task per image (`pipeline.orchestration.parallel.stream_tasks`), tasks get paths +
  config only.
- `ddt`, `cam`, `isnet`: CNN methods. What needs a whole group comes first: DDT's statistics, one device task per
  label group (`map_on_devices`); CAM's classifier fine-tuned on all labels, one device task (`run_on_device`).
  Then every pending image goes through one sharded pass (`pipeline.orchestration.sharded`): CPU tasks decode and
  resize (`read_inputs`), actors on every GPU of the cluster (or on CPUs) run the network one image per forward
  pass (`MapNetwork`: DDT's projection, the CAM, ISNet's saliency), CPU tasks upsample the map and write the files
  (`write_maps`). Without Ray the same steps run in this process and write the same bytes.
- `fusion`: every method in `coarse.fusion` writes its maps into `dst/_parts/<method>/` (same file contract, so each
  part resumes on its own), then per-image tasks write the geometric mean of the parts' probabilities. With `isnet`
  among them (`[isnet, cam]`), the other parts are class evidence that picks the label's objects among ISNet's
  salient ones (`pipeline.coarse.fusion.steer_salient`); with `coarse.classify_objects`, a last sharded pass
  classifies each of ISNet's objects from its crop into `dst/_parts/objects/` (`pipeline.coarse.objects`), which
  the steering adds to each object's evidence.

Resuming: an image whose `dst/<stem>.png` exists is skipped (`pipeline.stage.pending`). Group methods keep their
per-group results (DDT mean / principal component per label, CAM classifier weights) as small files under
`dst/_ddt` / `dst/_cam`, so a resumed run reuses them instead of redoing them.
Class-agnostic data (`data.class_agnostic`) arrives with every record labelled 1; DDT then forms one group of all
images (or per-image groups with `coarse.ddt_groups: image`). Every method is deterministic for a fixed `run.seed`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from pipeline.config import CoarseConfig, Config
from pipeline.io import IGNORE, load_probs, read_image, save_mask, save_probs
from pipeline.labels import soft_to_mask
from pipeline.orchestration.parallel import run_on_device, stream_tasks
from pipeline.orchestration.sharded import (Batch, InferencePass, batch_records, map_on_devices,
                                            replace_columns, run_inference)
from pipeline.stage import Pending, Record, StageContext, pending


@dataclass(frozen=True)
class CoarseJob:
    """Everything a per-image task needs: small and picklable, no arrays."""

    stem: str
    image: str  # path of the RGB image
    label: int  # the image's class id (>= 1)
    dst: str  # folder receiving <stem>.npz then <stem>.png
    coarse: CoarseConfig
    max_pixels: int  # data.max_pixels: refuse larger images
    seed: int  # run.seed
    parts: tuple[str, ...] = ()  # fusion: folders holding each part's <stem>.npz


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


def saliency_one(job: CoarseJob) -> dict:
    """Per-image task: saliency map of one image into `job.dst`."""
    from pipeline.coarse.saliency import saliency_foreground

    image = read_image(job.image, job.max_pixels)
    prob = saliency_foreground(image, seed=job.seed)
    mask = write_coarse(Path(job.dst), job.stem, job.label, prob, job.coarse)
    return _mask_stats(job.stem, mask)


def fuse_one(job: CoarseJob) -> dict:
    """Per-image task: the parts' foreground probabilities fused into `job.dst`: their geometric mean, or, with
    `isnet` among them, ISNet's salient objects steered by the other parts' class evidence."""
    from pipeline.coarse.fusion import geometric_mean, steer_salient

    maps = []
    for part in job.parts:
        path = Path(part) / f"{job.stem}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: fusion part missing for image {job.image}")
        maps.append(load_probs(path)[0][1])
    by_name = dict(zip((Path(part).name for part in job.parts), maps))
    salient, object_evidence = by_name.pop("isnet", None), by_name.pop("objects", None)
    if salient is not None and by_name:
        prob = steer_salient(salient, list(by_name.values()), object_evidence=object_evidence)
    else:
        prob = geometric_mean(maps)
    mask = write_coarse(Path(job.dst), job.stem, job.label, prob, job.coarse)
    return _mask_stats(job.stem, mask)


def read_inputs(batch: Batch, prepare: Callable[[np.ndarray], np.ndarray], max_pixels: int) -> Batch:
    """CPU step of the CNN methods: decode each row's image and `prepare` the network's input from it."""
    images = [read_image(path, max_pixels) for path in batch["path"]]
    return {**batch, "input": [prepare(image) for image in images],
            "height": np.array([im.shape[0] for im in images]), "width": np.array([im.shape[1] for im in images])}


class MapNetwork:
    """Device step of the CNN methods: `network()` (built once per actor) maps each input to a score map."""

    def __init__(self, network: Callable[[], Callable[[np.ndarray, Record], np.ndarray]]):
        self.network = network()

    def __call__(self, batch: Batch) -> Batch:
        scores = [self.network(x, r) for x, r in zip(batch["input"], batch_records(batch))]
        return replace_columns(batch, "input", score=scores)


def write_maps(batch: Batch, finish: Callable[[np.ndarray, tuple[int, int]], np.ndarray], dst: str,
               cfg: CoarseConfig) -> Batch:
    """CPU step of the CNN methods: `finish` each score map into the image's probability, then `write_coarse`."""
    stats = []
    for record, score, h, w in zip(batch_records(batch), batch["score"], batch["height"], batch["width"]):
        mask = write_coarse(Path(dst), record.stem, record.label, finish(np.asarray(score), (int(h), int(w))), cfg)
        stats.append(_mask_stats(record.stem, mask))
    return {"stem": batch["stem"], "fg": np.array([s["fg"] for s in stats]),
            "ignore": np.array([s["ignore"] for s in stats])}


def read_object_inputs(batch: Batch, salient_dir: str, max_pixels: int) -> Batch:
    """CPU step of `coarse.classify_objects`: each row's salient objects (from its ISNet part) and their crops."""
    from pipeline.coarse.objects import object_input

    columns = [object_input(read_image(path, max_pixels), load_probs(Path(salient_dir) / f"{stem}.npz")[0][1])
               for path, stem in zip(batch["path"], batch["stem"])]
    shapes = [c["objects"].shape for c in columns]
    return {**batch, **{key: [c[key] for c in columns] for key in ("input", "objects", "ids")},
            "height": np.array([h for h, _ in shapes]), "width": np.array([w for _, w in shapes])}


def full_size(evidence: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`write_maps`'s finish for maps made at the image's size (the object evidence)."""
    if evidence.shape != tuple(size):
        raise ValueError(f"object evidence {evidence.shape} is not at the image's size {size}")
    return evidence


def _objects_pass(cfg: Config, dst: Path, salient_dir: Path,
                  label_classes: dict[int, tuple[int, ...]]) -> InferencePass:
    """The sharded pass of `coarse.classify_objects`: crops of ISNet's objects (CPU), the ImageNet classifier on
    them (device), each object's probability of the label's classes painted over it (CPU, written as a part)."""
    from pipeline.coarse.objects import ObjectClassifier

    return InferencePass(load=partial(read_object_inputs, salient_dir=str(salient_dir), max_pixels=cfg.data.max_pixels),
                         model=partial(ObjectClassifier, label_classes),
                         write=partial(write_maps, finish=full_size, dst=str(dst), cfg=cfg.coarse))


def _network_pass(method: str, ctx: StageContext, dst: Path, todo: Pending,
                  label_classes: dict[int, tuple[int, ...]] | None) -> InferencePass:
    """The sharded pass of `ddt` / `cam` / `isnet` over `todo`, after the group work it needs: DDT's statistics per
    label group (one device task per group needing them), CAM's classifier (one device task). `label_classes`: the
    ImageNet classes of each label for cam (`coarse.cam_imagenet_classes`, read once by `run`), None without."""
    from pipeline.coarse.features import backbone_input

    cfg = ctx.cfg
    if method == "ddt":
        from pipeline.coarse import ddt

        prepare, finish = partial(backbone_input, side=cfg.coarse.image_side), ddt.projection_probability
        keys = None
        if cfg.coarse.ddt_groups == "label":
            groups = dict(ddt.ddt_groups(ctx.records, "label"))  # each a view of the table: no record held
            waiting = {f"label_{r.label}" for r in todo}
            map_on_devices(partial(ddt.group_statistics, dst=str(dst), cfg=cfg.coarse, max_pixels=cfg.data.max_pixels),
                           [g for name, g in sorted(groups.items()) if name in waiting], cfg.ray,
                           desc="coarse ddt statistics")
            keys = {name: ddt.stems_key(g) for name, g in groups.items() if name in waiting}
        network = partial(ddt.Projector, str(dst), keys)
    elif method == "cam":
        from pipeline.coarse import cam

        prepare, finish = partial(backbone_input, side=cfg.coarse.image_side), cam.cam_probability
        run_on_device(cam.fit_classifier, ctx.records, len(ctx.classes), dst, cfg.coarse,
                      cfg.data.max_pixels, cfg.run.seed, cfg=cfg.ray)
        key = cam.train_key(ctx.records, cfg.coarse, cfg.run.seed)
        network = partial(cam.CamMapper, str(dst), len(ctx.classes), key, cam.imagenet_mode(ctx.records, cfg.coarse),
                          label_classes)
    else:
        from pipeline.coarse import salient
        from pipeline.models.weights import isnet_path

        isnet_path(cfg.coarse.isnet_weights)  # missing weights: one clear error here, before any actor starts
        prepare = salient.isnet_input
        finish = partial(salient.saliency_probability, single_object=cfg.coarse.single_object)
        network = partial(salient.Saliency, cfg.coarse.isnet_weights, cfg.coarse.isnet_flip)
    return InferencePass(load=partial(read_inputs, prepare=prepare, max_pixels=cfg.data.max_pixels),
                         model=partial(MapNetwork, network),
                         write=partial(write_maps, finish=finish, dst=str(dst), cfg=cfg.coarse))


def _sum_stats(results: Iterable[dict]) -> dict[str, float]:
    """{"images": n, "fg": sum, "ignore": sum} of per-image `_mask_stats` results, folded as they arrive."""
    sums = {"images": 0, "fg": 0.0, "ignore": 0.0}
    for r in results:
        sums["images"] += 1
        sums["fg"] += r["fg"]
        sums["ignore"] += r["ignore"]
    return sums


def _run_method(method: str, ctx: StageContext, dst: Path,
                label_classes: dict[int, tuple[int, ...]] | None = None) -> dict[str, float]:
    """Run one base method (saliency, ddt, cam, isnet) for the records still pending in `dst`; returns the summed
    mask statistics {"images", "fg", "ignore"}."""
    dst.mkdir(parents=True, exist_ok=True)
    todo = pending(ctx.records, dst)
    if not todo:
        return {"images": 0}
    cfg = ctx.cfg
    if method == "saliency":
        jobs = (CoarseJob(stem=r.stem, image=str(r.image), label=int(r.label), dst=str(dst), coarse=cfg.coarse,
                          max_pixels=cfg.data.max_pixels, seed=cfg.run.seed) for r in todo)
        return _sum_stats(stream_tasks(saliency_one, jobs, len(todo), cfg.ray, desc=f"coarse saliency {dst.name}"))
    if method in ("ddt", "cam", "isnet"):
        job = _network_pass(method, ctx, dst, todo, label_classes)
        return run_inference(job, todo, cfg.ray, desc=f"coarse {method} {dst.name}")
    raise ValueError(f"coarse.fusion: unknown method {method!r} (choose from saliency, ddt, cam, isnet)")


def run(ctx: StageContext, src: None, dst: Path) -> dict:
    """Write every pending record's coarse map into `dst`; returns images done/skipped, seconds, fg/ignore shares."""
    start = time.time()
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    cfg = ctx.cfg
    for r in ctx.records:
        if r.label < 1 or r.label >= len(ctx.classes):
            raise ValueError(f"{r.image}: label {r.label} is not a foreground class id 1..{len(ctx.classes) - 1}")
    label_classes = None  # cam: each label's ImageNet classes, read here so a bad file stops the stage at once
    if cfg.coarse.cam_imagenet_classes:
        from pipeline.coarse.imagenet_classes import load_label_classes

        label_classes = load_label_classes(cfg.coarse.cam_imagenet_classes, ctx.classes)
    todo = pending(ctx.records, dst)
    method = cfg.coarse.method
    if method == "fusion":
        if not cfg.coarse.fusion:
            raise ValueError("coarse.fusion: needs at least one method to fuse")
        parts = []
        for part in cfg.coarse.fusion:
            if part == "fusion":
                raise ValueError("coarse.fusion: cannot contain 'fusion' itself")
            part_dir = dst / "_parts" / part
            if todo:
                _run_method(part, ctx, part_dir, label_classes)
            parts.append(str(part_dir))
        if cfg.coarse.classify_objects:  # after isnet's part: its objects are what gets classified
            objects_dir = dst / "_parts" / "objects"
            objects_dir.mkdir(parents=True, exist_ok=True)
            waiting = pending(ctx.records, objects_dir)
            if todo and waiting:
                run_inference(_objects_pass(cfg, objects_dir, dst / "_parts" / "isnet", label_classes), waiting,
                              cfg.ray, desc="coarse objects")
            parts.append(str(objects_dir))
        jobs = (CoarseJob(stem=r.stem, image=str(r.image), label=int(r.label), dst=str(dst), coarse=cfg.coarse,
                          max_pixels=cfg.data.max_pixels, seed=cfg.run.seed, parts=tuple(parts)) for r in todo)
        sums = _sum_stats(stream_tasks(fuse_one, jobs, len(todo), cfg.ray, desc="coarse fusion"))
    else:
        sums = _run_method(method, ctx, dst, label_classes)
    images = int(sums["images"])
    return {
        "method": method,
        "images": images,
        "skipped": len(ctx.records) - len(todo),
        "seconds": round(time.time() - start, 2),
        "mean_fg_fraction": round(sums["fg"] / images, 4) if images else 0.0,
        "mean_ignore_fraction": round(sums["ignore"] / images, 4) if images else 0.0,
    }
