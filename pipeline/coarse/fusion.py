"""Fusion of coarse foreground maps: the per-pixel geometric mean of the methods' probabilities.

    p = geometric_mean([p_ddt, p_saliency])        # float [H, W] each -> float32 [H, W]

A pixel is confident foreground only when every method leans that way (the geometric mean is pulled down by any
low vote), which suits coarse labels: a false foreground pixel costs more than an ignored one. Probabilities are
floored at FLOOR before the logarithm so a single hard zero does not veto the others completely. How the fusion
compares with the single methods on real photos: docs/results_weak.md.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

FLOOR = 1e-3  # smallest probability entering the log (one method's 0 gives at most FLOOR^(1/n))


def geometric_mean(maps: Sequence[np.ndarray]) -> np.ndarray:
    """Per-pixel geometric mean of foreground probability maps of one shape."""
    if not maps:
        raise ValueError("fusion needs at least one map")
    shape = np.shape(maps[0])
    for m in maps:
        if np.shape(m) != shape:
            raise ValueError(f"fusion: maps differ in shape ({np.shape(m)} vs {shape})")
    logs = [np.log(np.clip(np.asarray(m, np.float64), FLOOR, 1.0)) for m in maps]
    return np.exp(np.mean(logs, axis=0)).astype(np.float32)
