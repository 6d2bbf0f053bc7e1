"""Stage `predict`: the round's trained network predicts every training image; the prediction is the next soft map.

    summary = run(ctx, src=run_dir / "round1" / "train", dst=run_dir / "round1" / "predict")   # ctx.round == 1

One device task (GPU when the cluster has one) loads `src/model.pt` once and, for every record still pending in
`dst`, writes `dst/<stem>.npz` (softmax probabilities averaged over `rounds.scales` and, with `rounds.flip`, the
mirrored image) and then `dst/<stem>.png` (the pseudo-label: arg-max, 255 where the top probability is below
`rounds.confidence`). Killed midway, a rerun predicts only the images without a `.png`.

Foreground network (`rounds.foreground_network`): the network was trained on foreground vs background (stages/train.py
merges every class into one), so its foreground probability becomes the image's label: the soft map is stored over
{background, label}. Use it when a class-aware network cannot learn the classes from the few images each has
(COCO-MVal: 80 classes, ~5 photos each; the class-aware round-1 network ended at loss 2.2 and predicted almost only
background). Unlabelled classes cannot be told apart then, so `rounds.other_classes` does not apply.

Label blending (`rounds.blend` = b > 0): the stored soft map is (1 - b) x the network's (after the class restriction
below) + b x the soft map of the labels this round trained on (`<run>/crf` in round 1, `round{k-1}/crf` after), over
the union of their class ids. The network and the previous labels make partly independent errors, so their average
is a better start for the CRF than either alone; it is the label-side moving average of self-training (temporal
ensembling, Laine & Aila 2017) and keeps one poorly fitted round from undoing the previous round's labels.

Round ensemble (`rounds.ensemble`): from round 2 on, the stored soft map is the running mean of the rounds' own
maps (each after the blend and the outlier reset below), (k-1)/k x what round k-1 stored + 1/k x this round's,
and the pseudo-label is its arg-max, so round k's map averages k networks (a snapshot ensemble, Huang et al.
2017; the prediction-side temporal ensembling of Laine & Aila 2017). Each round's network fits its labels' errors
a little differently; the mean keeps what they agree on, and a later round moves the labels by only 1/k of its own
map, so the rounds settle instead of drifting. The reset is decided on the round's own map: deciding it on the
mean and then replacing the mean by the coarse map throws the earlier rounds away (COCO-MVal round 2: 0.2562 after
the CRF that way, vs 0.2593 averaging the reset maps). COCO-MVal rounds 1 / 2 / 3 after the CRF: 0.2574 / 0.2593 /
0.2601 with it, 0.2574 / 0.2538 / 0.2538 without (docs/results_weak.md).

Outlier reset (`rounds.reset_iou` = t > 0; Khoreva et al., "Simple Does It", CVPR 2017, which resets a segment
that fills too little of its box back to the box): an image whose predicted foreground (every class but background,
ignore excluded) overlaps the foreground of its first labels (`<run>/crf`) with IoU below t starts over: its coarse
map and mask (`<run>/coarse`) are copied in place of the prediction, so the round's CRF gives it its first labels
back (with `rounds.crf_bilateral_*` set, that CRF's kernel differs and it gets its coarse map refined by the rounds'
kernel). A network that learned little about a class otherwise shrinks its objects round after round
(COCO-MVal: predicted area 0.23 -> 0.19 -> 0.15 -> 0.12 of the photo with recall falling, docs/results_weak.md);
the reset keeps the first labels where the network disagrees with them and takes its prediction where it agrees.
With `rounds.reset_to: labels` such an image keeps the labels this round trained on instead (its previous
round's labels), so an image the network agreed with in one round and not in the next is not sent back to its
coarse map; on COCO-MVal it was worse (round 1 0.245 vs 0.2555 after the CRF: re-refining CRF-refined labels
shrinks them), so coco_mval.yaml keeps `coarse`. The summary counts the reset images. Measured: COCO-MVal
rounds hold at 0.239 / 0.237 / 0.238 with t = 0.5 (0.205 / 0.142 / 0.097 without; 0.250 / 0.250 / 0.244 with
the rounds' CRF kernel of coco_mval.yaml); on GrabCut, where the network does fix bad labels, it hurts (round 1
0.638 vs 0.671).

Objects of classes the image is not labelled with (the source paper's multi-category images: one label, two kinds
of object). The network sees every class across the data set, so on such an image it may put mass on a class the
label does not name. How those pixels are treated (`rounds.other_classes`):
- `ignore` (default, and in every round before `rounds.other_classes_from_round`): pixels whose arg-max over all
  classes is an unlabelled class become 255 in the `.png` (training skips them; the CRF keeps them 255 with
  `crf.ignore: keep`), and the stored soft map is restricted to {background, label} (renormalised), so nothing
  downstream can invent an unlabelled class from one image's weak evidence.
- `keep` (from round `rounds.other_classes_from_round` on): an unlabelled class stays in the soft map and in the
  pseudo-label when it is the arg-max on at least `OTHER_CLASS_MIN_AREA` of the image - evidence the network
  learned from the other images that are labelled with that class. Smaller traces are dropped as above.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.io import IGNORE, load_mask, load_probs, read_image, save_mask, save_probs
from pipeline.labels import confident_argmax
from pipeline.parallel import eta, run_on_device
from pipeline.stage import Record, StageContext, network_outputs, pending, training_labels

OTHER_CLASS_MIN_AREA = 0.01  # share of the image an unlabelled class must win to be kept (`keep` mode)


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


def blend_probs(probs: np.ndarray, class_ids: np.ndarray, prev: np.ndarray, prev_ids: np.ndarray,
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


def predict_task(cfg: Config, records: tuple[Record, ...], num_classes: int, src: str, dst: str, round_: int,
                 labels: str, run_dir: str) -> dict:
    """Device task: load the round's weights once, write every pending record's soft map and pseudo-label."""
    import torch

    from pipeline.engine import resolve_device
    from pipeline.inference import predict_probs
    from pipeline.models import build_model

    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device("auto")
    model = build_model(cfg.model, network_outputs(cfg, num_classes))
    model.load_state_dict(torch.load(Path(src) / "model.pt", map_location="cpu", weights_only=True))
    model.to(device).eval()
    keep_other = cfg.rounds.other_classes == "keep" and round_ >= cfg.rounds.other_classes_from_round
    out = Path(dst)
    ignored, other, resets = [], [], 0
    for record in pending(records, out):
        image = read_image(record.image, cfg.data.max_pixels)
        probs = predict_probs(model, image, scales=cfg.rounds.scales, flip=cfg.rounds.flip, device=device)
        if cfg.rounds.foreground_network:  # [background, foreground] -> [background, the image's label]
            soft, class_ids, dropped = probs, np.array([0, record.label], np.int32), np.zeros(probs.shape[1:], bool)
        else:
            soft, class_ids, dropped = restrict_classes(probs, record.label, keep_other)
        if cfg.rounds.blend > 0:
            prev, prev_ids = load_matching_probs(Path(labels) / f"{record.stem}.npz", soft, record)
            soft, class_ids = blend_probs(soft, class_ids, prev, prev_ids, cfg.rounds.blend)
        mask = confident_argmax(soft, class_ids, cfg.rounds.confidence)
        mask[dropped] = IGNORE
        if cfg.rounds.reset_iou > 0:
            first = load_mask(Path(run_dir) / training_labels(1) / f"{record.stem}.png")
            if foreground_iou(mask, first) < cfg.rounds.reset_iou:  # start over
                origin = Path(run_dir) / "coarse" if cfg.rounds.reset_to == "coarse" else Path(labels)
                soft, class_ids = load_probs(origin / f"{record.stem}.npz")
                mask, dropped = load_mask(origin / f"{record.stem}.png"), np.zeros_like(dropped)
                resets += 1
        if cfg.rounds.ensemble and round_ > 1:  # running mean: (k-1)/k x the rounds 1..k-1 mean + 1/k x this round
            previous = Path(run_dir) / f"round{round_ - 1}" / "predict" / f"{record.stem}.npz"
            prev, prev_ids = load_matching_probs(previous, soft, record)
            soft, class_ids = blend_probs(soft, class_ids, prev, prev_ids, (round_ - 1) / round_)
            mask = confident_argmax(soft, class_ids, cfg.rounds.confidence)
            mask[dropped] = IGNORE
        save_probs(out / f"{record.stem}.npz", soft, class_ids)
        save_mask(out / f"{record.stem}.png", mask)  # written last: marks the image done
        ignored.append(float((mask == IGNORE).mean()))
        other.append(len(class_ids) > 2)
    return {"images": len(ignored), "mean_ignore_fraction": round(float(np.mean(ignored)), 4) if ignored else 0.0,
            "images_with_other_class": int(np.sum(other)), "images_reset": resets}


def prediction_progress(records: tuple[Record, ...], dst: Path, todo: int, elapsed: float) -> str:
    """"predict: 30/60 images, 12s, ETA 12s" from the images written so far."""
    done = todo - len(pending(records, dst))
    return f"predict: {len(records) - todo + done}/{len(records)} images, {elapsed:.0f}s, ETA {eta(elapsed, done, todo)}"


def run(ctx: StageContext, src: Path, dst: Path) -> dict:
    """Predict every pending record with `src/model.pt` into `dst`; returns images done/skipped and seconds."""
    src, dst = Path(src), Path(dst)
    if not (src / "model.pt").is_file():
        raise FileNotFoundError(f"{src / 'model.pt'}: the round's trained weights are missing")
    dst.mkdir(parents=True, exist_ok=True)
    start = time.time()
    todo = len(pending(ctx.records, dst))
    summary = run_on_device(predict_task, ctx.cfg, tuple(ctx.records), len(ctx.classes), str(src), str(dst),
                            ctx.round, str(ctx.run_dir / training_labels(ctx.round)), str(ctx.run_dir),
                            cfg=ctx.cfg.ray,
                            progress=lambda elapsed: prediction_progress(ctx.records, dst, todo, elapsed))
    return {**summary, "skipped": len(ctx.records) - todo, "seconds": round(time.time() - start, 2)}
