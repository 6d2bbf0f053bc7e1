"""Dense-CRF refinement (Krähenbühl & Koltun 2011) of a soft map or a hard mask, as pure deterministic functions.

    probs = refine_probs(image, probs, cfg.crf)                  # float [K, H, W] -> CRF marginals [K, H, W]
    mask = refine_mask(image, mask, class_ids, cfg.crf)          # uint8 class ids (255 = ignore) -> uint8 mask

The stage that runs this over a whole data set with Ray is `stages/crf.py`; `tests/test_crf.py` shows the effect on
synthetic images and `benchmarks/coarse_real.py` (raw and +CRF per coarse method) on real photos.

Model: unary = -log p (p clipped at 1e-5, the pydensecrf `unary_from_softmax` convention); a Gaussian smoothness
kernel (sxy 3, compat 3: DeepLab's, fixed) and a bilateral appearance kernel (`crf.bilateral_*`, default sxy 80,
srgb 13, compat 10) with Potts compatibility, 10 mean-field iterations (IRN / DeepLab-style settings). How the
appearance kernel was chosen: docs/experiments.md.

Assumptions (the paper leaves these open; the choices below are the well-founded ones):
- Only classes the image can hold enter the CRF: those whose probability reaches MIN_CLASS_PROB somewhere (for a
  hard mask: background, the image's label and any class present). Others get probability exactly 0, so the CRF can
  never invent a class the unary gave no mass to. With a single such class the answer is that class everywhere.
- A hard label becomes a unary with confidence HARD_LABEL_PROB on its class and the rest spread evenly (IRN / pydensecrf
  `unary_from_labels`); an ignore (255) pixel gets a uniform unary, so the pairwise terms alone decide it.
  The stage puts 255 back on those pixels afterwards (ignore stays ignore: the rounds' treatment of unlabelled
  classes relies on it); `refine_mask(..., keep_ignore=False)` keeps the CRF's decision instead.
- Images whose long side exceeds `max_side` are refined at that size (area-averaged image, bilinear soft map) and the
  marginals are bilinearly upsampled back. Kernel widths are in pixels of the refined image and are not rescaled:
  the defaults were tuned for images of roughly 500 px, which is what downscaling produces.
- If the soft map's grid differs from the image's (an upstream stage worked at reduced size) the image is resized to
  the soft map's grid; the aspect ratios must agree within 2 %, else it is an error.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.config import CRFConfig
from pipeline.io import IGNORE

UNARY_EPS = 1e-5  # probability floor before -log: caps a unary at 11.5 nats, as pydensecrf's unary_from_softmax
SMOOTHNESS_SXY, SMOOTHNESS_COMPAT = 3.0, 3.0  # the Gaussian smoothness kernel: width (px) and weight (DeepLab's)
HARD_LABEL_PROB = 0.7  # confidence given to a hard label's class (pydensecrf's unary_from_labels default gt_prob)
MIN_CLASS_PROB = 0.01  # classes below this probability everywhere do not enter the CRF


def active_classes(probs: np.ndarray, min_class_prob: float) -> np.ndarray:
    """Row indices of the classes whose probability reaches `min_class_prob` at some pixel (at least one row)."""
    peak = probs.reshape(len(probs), -1).max(axis=1)
    rows = np.flatnonzero(peak >= max(min_class_prob, 1e-12))
    return rows if len(rows) else np.array([int(np.argmax(peak))])


def mask_to_probs(mask: np.ndarray, class_ids: np.ndarray | list[int], gt_prob: float) -> np.ndarray:
    """Soft map [K, H, W] from a hard mask: `gt_prob` on the pixel's class, the rest spread evenly; 255 -> uniform."""
    class_ids = np.asarray(class_ids, np.int64)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    if not 0.0 < gt_prob <= 1.0:
        raise ValueError(f"hard-label probability must be in (0, 1], got {gt_prob}")
    values = np.unique(mask)
    unknown = [int(v) for v in values if v != IGNORE and v not in class_ids]
    if unknown:
        raise ValueError(f"mask holds class ids {unknown} that are not among class_ids {class_ids.tolist()}")
    k = len(class_ids)
    if k == 1:
        return np.ones((1, *mask.shape), np.float32)
    lookup = np.full(256, -1, np.int64)
    lookup[class_ids] = np.arange(k)
    rows = lookup[mask]
    probs = np.full((k, *mask.shape), (1.0 - gt_prob) / (k - 1), np.float32)
    labelled = rows >= 0
    yy, xx = np.nonzero(labelled)
    probs[rows[labelled], yy, xx] = gt_prob
    probs[:, ~labelled] = 1.0 / k
    return probs


def _resize_image(image: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BOX if w < image.shape[1]
                                                    else Image.Resampling.BILINEAR), dtype=np.uint8)


def _resize_probs(probs: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of every channel of a float soft map, renormalised to sum to 1 over classes."""
    out = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(p, np.float32), mode="F")
                               .resize((w, h), Image.Resampling.BILINEAR)) for p in probs])
    out = np.clip(out, 0.0, None)
    return out / np.maximum(out.sum(axis=0, keepdims=True), 1e-12)


def _check_inputs(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    h, w = shape
    if image.shape[:2] == (h, w):
        return image
    ratio_image, ratio_map = image.shape[1] / image.shape[0], w / h
    if abs(ratio_image / ratio_map - 1.0) > 0.02:
        raise ValueError(f"image {image.shape[1]}x{image.shape[0]} and soft map {w}x{h} differ in aspect ratio")
    return _resize_image(image, h, w)


def _mean_field(image: np.ndarray, probs: np.ndarray, cfg: CRFConfig) -> np.ndarray:
    """pydensecrf inference on C-contiguous copies; probs [C, H, W] float, C >= 2."""
    import pydensecrf.densecrf as dcrf

    c, h, w = probs.shape
    unary = np.ascontiguousarray(-np.log(np.clip(probs, UNARY_EPS, 1.0)).reshape(c, -1), dtype=np.float32)
    crf = dcrf.DenseCRF2D(w, h, c)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=SMOOTHNESS_SXY, compat=SMOOTHNESS_COMPAT)
    if cfg.bilateral_compat > 0:
        rgb = np.array(image, dtype=np.uint8, order="C", copy=True)  # writable, contiguous (Ray arrays are not)
        crf.addPairwiseBilateral(sxy=cfg.bilateral_sxy, srgb=cfg.bilateral_srgb, rgbim=rgb,
                                 compat=cfg.bilateral_compat)
    q = np.asarray(crf.inference(cfg.iterations), dtype=np.float32)
    return q.reshape(c, h, w)


def refine_probs(image: np.ndarray, probs: np.ndarray, cfg: CRFConfig) -> np.ndarray:
    """Dense-CRF marginals float32 [K, H, W] of soft map `probs` [K, H, W] on RGB `image` (uint8 [H', W', 3]).

    Rows of classes below MIN_CLASS_PROB everywhere are 0 in the result; the others sum to 1 per pixel.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[0] < 1:
        raise ValueError(f"probs must be [K, H, W], got shape {probs.shape}")
    if not np.isfinite(probs).all() or probs.min() < 0:
        raise ValueError("probs must be finite and non-negative")
    k, h, w = probs.shape
    image = _check_inputs(image, (h, w))
    rows = active_classes(probs, MIN_CLASS_PROB)
    out = np.zeros((k, h, w), np.float32)
    if len(rows) == 1:
        out[rows[0]] = 1.0
        return out
    sub = probs[rows]
    sub = sub / np.maximum(sub.sum(axis=0, keepdims=True), 1e-12)
    scale = min(1.0, cfg.max_side / max(h, w))
    if scale < 1.0:
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        q = _mean_field(_resize_image(image, sh, sw), _resize_probs(sub, sh, sw), cfg)
        q = _resize_probs(q, h, w)
    else:
        q = _mean_field(image, sub, cfg)
    out[rows] = q
    return out


def refine_mask(image: np.ndarray, mask: np.ndarray, class_ids: np.ndarray | list[int], cfg: CRFConfig,
                keep_ignore: bool = True) -> np.ndarray:
    """Refined uint8 mask from a hard mask (255 = ignore) over `class_ids`, each label trusted with HARD_LABEL_PROB.

    Ignore pixels stay 255 with `keep_ignore`, else the CRF labels them.
    """
    class_ids = np.asarray(class_ids, np.int64)
    probs = mask_to_probs(mask, class_ids, HARD_LABEL_PROB)
    if len(class_ids) > 1:
        probs = refine_probs(image, probs, cfg)
    refined = class_ids[np.argmax(probs, axis=0)].astype(np.uint8)
    if keep_ignore:
        refined[mask == IGNORE] = IGNORE
    return refined
