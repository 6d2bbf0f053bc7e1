"""Salient-object maps from ISNet: the coarse method of the second track (`coarse.method: isnet`).

    for record, prob in isnet_maps(records, dst, weights="", max_pixels=40_000_000): ...   # pending records only

ISNet (pipeline/models/isnet.py) was trained with pixel masks on DIS5K, other data than ours: a run that uses it is
weakly supervised by image-level labels *plus* a saliency network, the "S" track of weakly supervised segmentation
tables, and its numbers are reported apart from the image-level-only track. The map is class-agnostic; the image's
label names its class, and fusing it with the label's class evidence (`coarse.fusion: [isnet, ddt]`) lets the label
pick its object among the salient ones (stages/coarse.py).

Images are read and predicted `ISNET_BATCH` at a time on the task's device: bf16 autocast and channels_last on
CUDA, float32 on CPU. A resumed run predicts only the images still pending.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from pipeline.coarse.features import pick_device
from pipeline.io import read_image
from pipeline.models.isnet import load_isnet_onnx, predict_saliency_batch
from pipeline.models.weights import isnet_path
from pipeline.stage import Record, pending

ISNET_BATCH = 4  # images per forward pass (1024 x 1024 each)


def isnet_maps(records: Sequence[Record], dst: Path, weights: str,
               max_pixels: int) -> Iterator[tuple[Record, np.ndarray]]:
    """Yield (record, foreground probability [H, W]) for every record still pending in `dst`."""
    todo = pending(records, dst)
    if not todo:
        return
    device = pick_device()
    model = load_isnet_onnx(isnet_path(weights)).to(device).eval()
    on_cuda = device.type == "cuda"
    if on_cuda:
        model = model.to(memory_format=torch.channels_last)
    for start in range(0, len(todo), ISNET_BATCH):
        batch = todo[start:start + ISNET_BATCH]
        images = [read_image(r.image, max_pixels) for r in batch]
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_cuda):
            probs = predict_saliency_batch(model, images, batch_size=ISNET_BATCH)
        yield from zip(batch, probs)
