"""Weight-free classical saliency: SLIC superpixels + a robust image-border background prior.

    p = saliency_foreground(image, segments=200)      # uint8 RGB [H, W, 3] -> float32 foreground prob [H, W]
    method(setting)                                   # `coarse.method: saliency` for stages/coarse.py: one CPU
                                                      # task per image (pipeline/coarse/method.py)

No network and no weights: the fallback coarse method, and the second half of the default `fusion`.

Method (in the spirit of Wei et al. 2012 "Geodesic saliency using background priors" and Zhu et al. 2014 "Saliency
optimization from robust background detection"; the paper we follow leaves the details open, these are the choices):
1. The image is reduced to a long side of WORK_SIDE px (speed; the result is upsampled back bilinearly) and cut into
   `segments` SLIC superpixels (compactness 10, Lab space). Each superpixel is described by its mean Lab colour.
2. Background prior: superpixels touching the image border are background candidates. An object may touch the
   border, so the prior is made robust: border superpixels whose colour lies far from the other border superpixels
   (distance to their colour median above median + 2 MAD) are dropped from the background set.
3. Contrast: a superpixel's saliency is its mean Lab distance to the K_NEAREST most similar background superpixels
   (mean of the k smallest distances, so one odd-coloured border patch cannot make everything salient).
4. One step of graph smoothing: each superpixel's score is averaged with its adjacent superpixels, weighted by colour
   similarity exp(-d^2 / (2 sigma^2)) (sigma = SMOOTH_SIGMA Lab units), which fills textured objects.
5. Scores are scaled to [0, 1] and mapped piecewise-linearly so that the Otsu threshold of the superpixel scores
   lands on 0.5: above-Otsu superpixels become foreground-leaning (p > 0.5), the rest background-leaning. The
   thresholds `coarse.fg_threshold` / `bg_threshold` then decide what is confident and what is ignored.
"""
from __future__ import annotations

from functools import partial

import numpy as np
from skimage.color import rgb2lab
from skimage.filters import threshold_otsu
from skimage.segmentation import slic
from skimage.transform import resize

from pipeline.coarse.method import Method, MethodSetting, Parts

WORK_SIDE = 256  # long side of the image saliency is computed on (px); enough for 200 superpixels
SLIC_COMPACTNESS = 10.0  # SLIC colour/space trade-off (scikit-image default for Lab)
K_NEAREST = 5  # background superpixels a superpixel is compared with (the most similar ones)
SMOOTH_SIGMA = 10.0  # Lab distance scale of the neighbour-smoothing weights
OUTLIER_MADS = 2.0  # border superpixels this many MADs beyond the median colour distance are not background


def _superpixel_graph(labels: np.ndarray, n: int) -> np.ndarray:
    """Boolean [n, n] adjacency of superpixels that share a 4-neighbour pixel edge."""
    adj = np.zeros((n, n), bool)
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        diff = a != b
        adj[a[diff], b[diff]] = True
    return adj | adj.T


def _to_probability(score: np.ndarray) -> np.ndarray:
    """Scale scores to [0, 1], then map piecewise-linearly so the Otsu threshold lands on 0.5."""
    lo, hi = float(score.min()), float(score.max())
    if hi - lo < 1e-6:  # flat image: no evidence either way
        return np.full_like(score, 0.5)
    s = (score - lo) / (hi - lo)
    t = float(np.clip(threshold_otsu(s), 1e-3, 1 - 1e-3))
    return np.where(s < t, 0.5 * s / t, 0.5 + 0.5 * (s - t) / (1 - t)).astype(np.float32)


def saliency_foreground(image: np.ndarray, segments: int = 200, seed: int = 0) -> np.ndarray:
    """Foreground probability float32 [H, W] of an RGB uint8 image from superpixel contrast to the border.

    `segments` is the SLIC superpixel count; `seed` only fixes tie-breaking, the
    method itself is deterministic.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"saliency needs an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    scale = min(1.0, WORK_SIDE / max(h, w))
    sh, sw = max(8, round(h * scale)), max(8, round(w * scale))
    small = resize(image, (sh, sw), order=1, anti_aliasing=scale < 1, preserve_range=True).astype(np.float32) / 255.0
    labels = slic(small, n_segments=segments, compactness=SLIC_COMPACTNESS, start_label=0, channel_axis=-1)
    n = int(labels.max()) + 1
    lab = rgb2lab(small).reshape(-1, 3)
    counts = np.maximum(np.bincount(labels.ravel(), minlength=n), 1)
    colour = np.stack([np.bincount(labels.ravel(), lab[:, c], minlength=n) for c in range(3)], 1) / counts[:, None]

    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    med = np.median(colour[border], axis=0)
    dist_to_med = np.linalg.norm(colour[border] - med, axis=1)
    mad = np.median(np.abs(dist_to_med - np.median(dist_to_med))) + 1e-6
    background = border[dist_to_med <= np.median(dist_to_med) + OUTLIER_MADS * 1.4826 * mad]
    if len(background) == 0:  # cannot happen with a median rule, but never divide by an empty set
        background = border

    d = np.linalg.norm(colour[:, None, :] - colour[None, background, :], axis=2)  # [n, |background|]
    k = min(K_NEAREST, d.shape[1])
    score = np.sort(d, axis=1)[:, :k].mean(axis=1)

    adj = _superpixel_graph(labels, n) | np.eye(n, dtype=bool)
    cdist = np.linalg.norm(colour[:, None, :] - colour[None, :, :], axis=2)
    weight = np.where(adj, np.exp(-cdist**2 / (2 * SMOOTH_SIGMA**2)), 0.0)
    score = (weight @ score) / weight.sum(axis=1)

    prob_small = _to_probability(score)[labels]
    if (sh, sw) == (h, w):
        return prob_small.astype(np.float32)
    return resize(prob_small, (h, w), order=1, anti_aliasing=False, preserve_range=True).astype(np.float32)


def image_probability(image: np.ndarray, parts: Parts, seed: int) -> np.ndarray:
    """The per-image function of `coarse.method: saliency` (reads no parts)."""
    return saliency_foreground(image, seed=seed)


def method(setting: MethodSetting) -> Method:
    """`coarse.method: saliency`: one CPU task per image, nothing per group."""
    return Method(per_image=partial(image_probability, seed=setting.seed), reads_image=True)
