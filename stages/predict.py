"""Stage `predict`: the round's trained network predicts every training image; the prediction is the next soft map.

    summary = run(ctx, src=run_dir / "round1" / "train", dst=run_dir / "round1" / "predict")   # ctx.round == 1

Every record still pending in `dst` gets `dst/<stem>.npz` (softmax probabilities averaged over `test_time.scales` and,
with `test_time.flip`, the mirrored image) and then `dst/<stem>.png` (the pseudo-label, arg-max). The work is a sharded
pass (`pipeline.orchestration.sharded`): CPU tasks decode the images (`read_images`), actors holding `src/model.pt`
on every GPU of the cluster (or on CPUs) predict them one image per forward pass (`Predictor`), CPU tasks turn the
probabilities into the stored labels and write them (`write_predictions`); without Ray the same three steps run in
this process and write the same bytes. Killed midway, a rerun predicts only the images without a `.png`. Each
image's labels come from these steps, one function each:

1. `restrict_classes` - which classes the soft map keeps. The network sees every class across the data set, so on
   an image it may put mass on a class the label does not name (the source paper's multi-category images). Before
   round `rounds.keep_other_classes_from` (or always, when it is 0) the map keeps background and the label, and
   pixels whose arg-max is another class become ignore (255); from that round on a class that wins at least
   OTHER_CLASS_MIN_AREA of the image stays (evidence learned from the images labelled with it). With
   `rounds.foreground_network` the network's two classes become background and the image's label.
2. `outlier_reset` (`rounds.reset_iou` > 0; Khoreva et al., "Simple Does It", CVPR 2017): an image whose predicted
   foreground overlaps its first labels (`<run>/crf`) with IoU below the threshold starts over from its coarse map,
   so a network that learned little about a class cannot shrink its objects round after round.
3. `round_ensemble` (`rounds.ensemble`, round k >= 2): the stored map is the running mean of the rounds' maps,
   (k-1)/k x round k-1's + 1/k x this round's: a snapshot ensemble (Huang et al. 2017) that lets the rounds settle
   instead of drifting. The reset is decided on the round's own map, before averaging.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.io import IGNORE, load_mask, load_probs, read_image, save_mask, save_probs
from pipeline.labels import class_argmax
from pipeline.orchestration.sharded import (Batch, InferencePass, batch_records, replace_columns,
                                            run_inference)
from pipeline.stage import Record, StageContext, network_outputs, pending, training_labels

OTHER_CLASS_MIN_AREA = 0.01  # share of the image an unlabelled class must win to stay (rounds.keep_other_classes_from)


def restrict_classes(probs: np.ndarray, label: int, keep_other: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From full probabilities [C, H, W]: (soft map over the kept class ids, those ids, mask of dropped-class pixels).

    Kept: background, the image's label, and (with keep_other) every other class that is the arg-max on at least
    OTHER_CLASS_MIN_AREA of the pixels. Pixels whose arg-max is a dropped class are flagged for ignore.
    """
    top = np.argmax(probs, axis=0)
    keep = {0, int(label)}
    if keep_other:
        area = np.bincount(top.ravel(), minlength=probs.shape[0]) / top.size
        keep |= {int(c) for c in np.flatnonzero(area >= OTHER_CLASS_MIN_AREA)}
    class_ids = np.array(sorted(keep), np.int32)
    kept = probs[class_ids]
    kept = kept / np.maximum(kept.sum(axis=0, keepdims=True), 1e-8)
    dropped = ~np.isin(top, class_ids)
    return kept.astype(np.float32), class_ids, dropped


def mix_probs(probs: np.ndarray, class_ids: np.ndarray, prev: np.ndarray, prev_ids: np.ndarray,
              weight: float) -> tuple[np.ndarray, np.ndarray]:
    """(1 - weight) x probs + weight x prev over the union of the class ids; returns (soft map, ids)."""
    ids = np.union1d(class_ids, prev_ids).astype(np.int32)
    out = np.zeros((len(ids),) + probs.shape[1:], np.float32)
    out[np.searchsorted(ids, class_ids)] += (1.0 - weight) * probs
    out[np.searchsorted(ids, prev_ids)] += weight * prev
    return out / np.maximum(out.sum(axis=0, keepdims=True), 1e-8), ids


def load_matching_probs(path: Path, soft: np.ndarray, record: Record) -> tuple[np.ndarray, np.ndarray]:
    """The soft map and class ids stored at `path`, which must cover the same pixels as `soft` (of `record`)."""
    prev, prev_ids = load_probs(path)
    if prev.shape[1:] != soft.shape[1:]:
        raise ValueError(f"{path}: soft map {prev.shape[1:]} does not match the image {soft.shape[1:]} "
                         f"({record.image})")
    return prev, prev_ids


def foreground_iou(mask: np.ndarray, reference: np.ndarray) -> float:
    """IoU of the foregrounds (not background 0, not ignore 255) of two label masks; 1.0 when both are empty."""
    a = (mask != 0) & (mask != IGNORE)
    b = (reference != 0) & (reference != IGNORE)
    union = int((a | b).sum())
    return float((a & b).sum()) / union if union else 1.0


@dataclass(frozen=True)
class Labels:
    """One image's soft map over `class_ids`, its pseudo-label and the pixels dropped to ignore."""

    soft: np.ndarray
    class_ids: np.ndarray
    mask: np.ndarray
    dropped: np.ndarray


def pseudo_label(soft: np.ndarray, class_ids: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    """Arg-max class id per pixel, 255 where `dropped` (an unlabelled class won there)."""
    mask = class_argmax(soft, class_ids)
    mask[dropped] = IGNORE
    return mask


def outlier_reset(mask: np.ndarray, record: Record, run_dir: Path, threshold: float) -> Labels | None:
    """The coarse map and mask of `record` if its predicted foreground overlaps its first labels with IoU below
    `threshold` (step 2 of the module docstring), else None."""
    first = load_mask(run_dir / training_labels(1) / f"{record.stem}.png")
    if foreground_iou(mask, first) >= threshold:
        return None
    soft, class_ids = load_probs(run_dir / "coarse" / f"{record.stem}.npz")
    mask = load_mask(run_dir / "coarse" / f"{record.stem}.png")
    return Labels(soft, class_ids, mask, np.zeros(mask.shape, bool))


def round_ensemble(labels: Labels, record: Record, run_dir: Path, round_: int) -> Labels:
    """Round `round_`'s map averaged with what round `round_ - 1` stored (step 3 of the module docstring)."""
    previous = run_dir / f"round{round_ - 1}" / "predict" / f"{record.stem}.npz"
    prev, prev_ids = load_matching_probs(previous, labels.soft, record)
    soft, class_ids = mix_probs(labels.soft, labels.class_ids, prev, prev_ids, (round_ - 1) / round_)
    return Labels(soft, class_ids, pseudo_label(soft, class_ids, labels.dropped), labels.dropped)


def image_labels(probs: np.ndarray, record: Record, cfg: Config, round_: int, run_dir: Path) -> tuple[Labels, bool]:
    """The network's probabilities [C, H, W] -> the image's stored labels, and whether it was reset."""
    if cfg.rounds.foreground_network:  # [background, foreground] -> [background, the image's label]
        soft, class_ids, dropped = probs, np.array([0, record.label], np.int32), np.zeros(probs.shape[1:], bool)
    else:
        keep_other = 0 < cfg.rounds.keep_other_classes_from <= round_
        soft, class_ids, dropped = restrict_classes(probs, record.label, keep_other)
    labels = Labels(soft, class_ids, pseudo_label(soft, class_ids, dropped), dropped)
    reset = outlier_reset(labels.mask, record, run_dir, cfg.rounds.reset_iou) if cfg.rounds.reset_iou > 0 else None
    labels = reset or labels
    if cfg.rounds.ensemble and round_ > 1:
        labels = round_ensemble(labels, record, run_dir, round_)
    return labels, reset is not None


def read_images(batch: Batch, max_pixels: int) -> Batch:
    """CPU step: decode each row's image (RGB uint8)."""
    return {**batch, "image": [read_image(path, max_pixels) for path in batch["path"]]}


class Predictor:
    """Device step: the round's network (loaded once per actor), one image per forward pass (so an image's map never
    depends on the other images of its batch), softmax averaged over `test_time.scales` and flips."""

    def __init__(self, cfg: Config, num_classes: int, src: str):
        import torch

        from pipeline.learn.engine import resolve_device
        from pipeline.models import build_model

        self.cfg, self.device = cfg, resolve_device("auto")
        model = build_model(cfg.model, network_outputs(cfg, num_classes))
        model.load_state_dict(torch.load(Path(src) / "model.pt", map_location="cpu", weights_only=True))
        self.model = model.to(self.device).eval()

    def __call__(self, batch: Batch) -> Batch:
        from pipeline.learn.inference import predict_probs

        probs = [predict_probs(self.model, image, scales=self.cfg.test_time.scales, flip=self.cfg.test_time.flip,
                               device=self.device) for image in batch["image"]]
        return replace_columns(batch, "image", probs=probs)


def write_predictions(batch: Batch, cfg: Config, round_: int, run_dir: str, dst: str) -> Batch:
    """CPU step: each image's stored labels (`image_labels`) into `dst/<stem>.npz`, then `dst/<stem>.png`."""
    ignored, other, reset = [], [], []
    for record, probs in zip(batch_records(batch), batch["probs"]):
        labels, was_reset = image_labels(np.asarray(probs), record, cfg, round_, Path(run_dir))
        save_probs(Path(dst) / f"{record.stem}.npz", labels.soft, labels.class_ids)
        save_mask(Path(dst) / f"{record.stem}.png", labels.mask)  # written last: marks the image done
        ignored.append(float((labels.mask == IGNORE).mean()))
        other.append(len(labels.class_ids) > 2)
        reset.append(was_reset)
    return {"stem": batch["stem"], "ignored": np.array(ignored), "other": np.array(other), "reset": np.array(reset)}


def run(ctx: StageContext, src: Path, dst: Path) -> dict:
    """Predict every pending record with `src/model.pt` into `dst`; returns images done/skipped and seconds."""
    src, dst = Path(src), Path(dst)
    if not (src / "model.pt").is_file():
        raise FileNotFoundError(f"{src / 'model.pt'}: the round's trained weights are missing")
    dst.mkdir(parents=True, exist_ok=True)
    start = time.time()
    todo = pending(ctx.records, dst)
    cfg = ctx.cfg
    job = InferencePass(load=partial(read_images, max_pixels=cfg.data.max_pixels),
                        model=partial(Predictor, cfg, len(ctx.classes), str(src)),
                        write=partial(write_predictions, cfg=cfg, round_=ctx.round, run_dir=str(ctx.run_dir),
                                      dst=str(dst)))
    done = run_inference(job, todo, cfg.ray, desc=f"predict round {ctx.round}")
    images = done["images"]
    return {"images": images, "mean_ignore_fraction": round(done["ignored"] / images, 4) if images else 0.0,
            "images_with_other_class": int(done.get("other", 0)), "images_reset": int(done.get("reset", 0)),
            "skipped": len(ctx.records) - len(todo), "seconds": round(time.time() - start, 2)}
