"""`coarse.method: fusion`: the per-pixel geometric mean of the maps of the methods in `coarse.fusion`.

    p = geometric_mean([p_ddt, p_saliency])        # float [H, W] each -> float32 [H, W]
    method(setting)                                # for stages/coarse.py: the parts first, then one CPU task per image

A pixel is confident foreground only when every method leans that way (the geometric mean is pulled down by any
low vote), which suits coarse labels: a false foreground pixel costs more than an ignored one. Probabilities are
floored at FLOOR before the logarithm so a single hard zero does not veto the others completely. How the fusion
compares with the single methods on real photos: docs/results.md. ISNet's salient map is not fused this way but
steered by the others (`coarse.method: steered`, pipeline/coarse/steered.py).
"""
from __future__ import annotations

from functools import partial
from typing import Sequence

import numpy as np

from pipeline.coarse.method import Method, MethodSetting, Parts

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


def fused_probability(image: None, parts: Parts, names: tuple[str, ...]) -> np.ndarray:
    """The per-image function of `coarse.method: fusion`: the geometric mean of the parts `names` (in that order)."""
    return geometric_mean([parts[name] for name in names])


def method(setting: MethodSetting) -> Method:
    """`coarse.method: fusion`: every method in `coarse.fusion` writes its part, then one CPU task per image."""
    names = tuple(setting.coarse.fusion)
    return Method(parts=names, per_image=partial(fused_probability, names=names))
