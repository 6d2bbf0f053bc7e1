"""The embedded demo data set: generated from a seed on first use, no downloads.

    from pipeline.data.demo import ensure_demo; ensure_demo(cfg.data)   # writes data/demo/ once

Each image (160-256 px a side) is a crop of a real scikit-image texture (brick, grass, gravel, moon, ...) tinted with
a random colour, with one object pasted on it. Three object classes differ in shape and texture:
    disc      an ellipse filled with concentric rings
    triangle  a triangle filled with a dot lattice
    cross     a plus-shaped cross filled with diagonal stripes
About a fifth of the images also hold a smaller object of a second class while `labels.csv` names only the larger one
(the source paper's multi-category case); `masks/` holds the full ground truth (both objects) for scoring only.
The same seed gives byte-identical files. With `data.holdout: holdout` (configs/demo.yaml) the set also gets
`<root>/holdout/`: DEMO_HOLDOUT_IMAGES more images in the same layout from another seed, ids prefixed `h`, the
photos the run holds out (pipeline/data/holdout.py); the training images are the same with or without it.
"""
from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import numpy as np
from skimage import data as skdata
from skimage.draw import ellipse, polygon
from skimage.transform import resize, rotate

from pipeline.config import DataConfig
from pipeline.io import save_image, save_mask

CLASSES = ("background", "disc", "triangle", "cross")
TEXTURES = ("brick", "grass", "gravel", "moon", "camera", "coins")  # bundled with scikit-image (no download)
SECOND_OBJECT_RATE = 0.2  # share of images holding an unlabelled object of another class
DEMO_SEED = 0  # the generator's seed: every machine makes the same demo pixels
DEMO_HOLDOUT = "holdout"  # the held-out folder below the demo root (data.holdout in configs/demo.yaml)
DEMO_HOLDOUT_IMAGES = 20  # images in it
DEMO_HOLDOUT_SEED = 1  # its generator's seed: other pixels than the training images'


def ensure_demo(cfg: DataConfig) -> Path:
    """Generate the demo set into cfg.root unless a complete one (marked by `.complete`) is already there, and its
    held-out folder when `data.holdout` names `<root>/holdout` (the folder path is relative to the root)."""
    root = Path(cfg.root)
    if not (root / ".complete").is_file():
        _generate_complete(root, cfg.demo_images, DEMO_SEED)
    if cfg.holdout == DEMO_HOLDOUT and not (root / DEMO_HOLDOUT / ".complete").is_file():
        _generate_complete(root / DEMO_HOLDOUT, DEMO_HOLDOUT_IMAGES, DEMO_HOLDOUT_SEED, prefix="h")
    return root


def _generate_complete(root: Path, num_images: int, seed: int, prefix: str = "") -> None:
    """`generate` into a temporary folder, marked complete, then renamed to `root` (replacing what was there)."""
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    generate(tmp, num_images, seed, prefix=prefix)
    (tmp / ".complete").write_text(f"seed={seed} images={num_images}\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)


def generate(root: Path, num_images: int, seed: int, shape: tuple[int, int] | None = None, prefix: str = "") -> None:
    """Write `num_images` images, masks, labels.csv and classes.txt into `root` (which must not exist); `shape` = a
    fixed (h, w) for every image instead of 160-256 px a side (benchmarks/scale.py's photo-sized images); `prefix`
    starts every file name (image ids that differ from another set's)."""
    rng = np.random.default_rng(seed)
    textures = [np.asarray(getattr(skdata, name)(), np.float32) / 255.0 for name in TEXTURES]
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for i in range(num_images):
        h, w = (int(v) for v in rng.integers(160, 257, size=2))  # drawn even with `shape`: the same draws follow
        if shape is not None:
            h, w = shape
        image = _background(textures[i % len(textures)], h, w, rng)
        mask = np.zeros((h, w), np.uint8)
        label = 1 + i % (len(CLASSES) - 1)  # balanced classes
        size = rng.uniform(0.35, 0.6) * min(h, w)
        _paste(image, mask, label, size, rng)
        if rng.random() < SECOND_OBJECT_RATE:
            other = 1 + (label + int(rng.integers(0, 2))) % (len(CLASSES) - 1)
            _paste(image, mask, other, size * rng.uniform(0.45, 0.7), rng, avoid=mask > 0)
        name = f"{prefix}{i:03d}_{CLASSES[label]}.png"
        save_image(root / "images" / name, (np.clip(image, 0, 1) * 255).astype(np.uint8))
        save_mask(root / "masks" / f"{Path(name).stem}.png", mask)
        rows.append((name, CLASSES[label]))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "label"])
    writer.writerows(rows)
    (root / "labels.csv").write_text(buf.getvalue())
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")


def _background(texture: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    scale = rng.uniform(0.6, 1.0)
    th, tw = min(int(h / scale), texture.shape[0]), min(int(w / scale), texture.shape[1])
    y, x = int(rng.integers(0, texture.shape[0] - th + 1)), int(rng.integers(0, texture.shape[1] - tw + 1))
    crop = resize(texture[y:y + th, x:x + tw], (h, w), order=1, anti_aliasing=False)
    tint = rng.uniform(0.35, 0.85, size=3)
    return (0.25 + 0.75 * crop[..., None]) * tint  # muted, textured background


def _paste(image: np.ndarray, mask: np.ndarray, label: int, size: float, rng: np.random.Generator,
           avoid: np.ndarray | None = None) -> None:
    h, w = mask.shape
    s = int(size)
    shape = _shape(label, s, rng)
    fill = _texture(label, s, rng)
    for _ in range(20):  # find a place that does not cover the first object much
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        if avoid is None or (avoid[y:y + s, x:x + s] & shape).mean() < 0.05:
            break
    region = shape & (mask[y:y + s, x:x + s] == 0) if avoid is not None else shape
    image[y:y + s, x:x + s][region] = fill[region]
    mask[y:y + s, x:x + s][region] = label


def _shape(label: int, s: int, rng: np.random.Generator) -> np.ndarray:
    m = np.zeros((s, s), bool)
    c = s / 2
    if label == 1:  # disc: an ellipse
        rr, cc = ellipse(c, c, c * rng.uniform(0.7, 0.95), c * rng.uniform(0.7, 0.95), shape=m.shape)
        m[rr, cc] = True
    elif label == 2:  # triangle
        rr, cc = polygon([s * 0.05, s * 0.95, s * 0.95], [c, s * 0.05, s * 0.95], shape=m.shape)
        m[rr, cc] = True
    else:  # cross
        t = s * rng.uniform(0.15, 0.22)
        m[int(c - t):int(c + t), int(s * 0.05):int(s * 0.95)] = True
        m[int(s * 0.05):int(s * 0.95), int(c - t):int(c + t)] = True
    return rotate(m.astype(float), rng.uniform(-30, 30), order=0) > 0.5


def _texture(label: int, s: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
    if label == 1:  # concentric rings, warm colours
        r = np.hypot(yy - s / 2, xx - s / 2)
        pattern = 0.5 + 0.5 * np.sin(r / rng.uniform(2.0, 3.5))
        lo, hi = np.array([0.55, 0.1, 0.05]), np.array([1.0, 0.6, 0.2])
    elif label == 2:  # dot lattice, cool colours
        period = rng.uniform(5, 8)
        pattern = ((np.sin(yy / period * np.pi) * np.sin(xx / period * np.pi)) > 0.3).astype(np.float32)
        lo, hi = np.array([0.05, 0.15, 0.5]), np.array([0.5, 0.8, 1.0])
    else:  # diagonal stripes, green-yellow
        pattern = 0.5 + 0.5 * np.sign(np.sin((yy + xx) / rng.uniform(2.5, 4.0)))
        lo, hi = np.array([0.2, 0.45, 0.0]), np.array([0.85, 0.95, 0.2])
    jitter = rng.uniform(-0.08, 0.08, size=3)
    return np.clip(lo + pattern[..., None] * (hi - lo) + jitter, 0, 1)
