"""Class activation maps (Zhou et al. 2016) of an EfficientNet-Lite0 classifier fine-tuned on the image-level labels.

    cam = class_activation_map(head_map, weight)            # [1280, h, w], [1280] -> [h, w], max-normalised, >= 0

    # what stages/coarse.py runs (`method`): one fitting task on a whole device, then any number of mappers
    fit_classifier(records, num_classes, dst, cfg.coarse, max_pixels, seed)
    mapper = CamMapper(dst, num_classes, train_key(records, cfg.coarse, seed), imagenet_mode(records, cfg.coarse))
    prob = cam_probability(mapper(x=backbone_input(image, cfg.coarse.image_side), record=record), image.shape[:2])

Fine-tuning (`coarse.cam_epochs` epochs, when the records hold >= 2 distinct labels): the ImageNet backbone up to
its last block is frozen and its stride-32 features are extracted once; the 1x1 head conv (320 -> 1280, ImageNet
init, BN kept in eval mode) and a new linear classifier over the foreground classes are trained with cross-entropy
(AdamW, head lr HEAD_LR, classifier lr FC_LR, batch BATCH, weight decay WEIGHT_DECAY, dropout 0.2). Because the
head is 1x1 and pooling global, flips add nothing and no augmentation is used. Class-agnostic data (one label) or
`cam_epochs: 0` use the ImageNet classifier instead: the CAM of each image's top-1 ImageNet class, or, with
`coarse.cam_imagenet_classes` (pipeline/coarse/imagenet_classes.py), the CAM of the ImageNet classes the image's
label names (`label_cam`); a label with none gets no evidence (p = 0.5 everywhere).

Assumptions (the paper leaves them open): training only the head keeps fine-tuning cheap on CPU (features once,
then a few hundred 1x1-conv steps) and cannot destroy the pretrained localisation of the trunk; CAMs are
ReLU'd and divided by their maximum, and CAM_DECISION (0.3 of the maximum, the usual CAM box threshold) maps to
probability 0.5, linearly on each side. The classifier is kept in `dst/_cam/classifier.pt` with a key of the
training set, so a resumed run reuses it. The maps are computed one image per forward pass, after the fitting,
so each image's features are extracted twice (once to fit, once to map): the price of mapping on any device.
"""
from __future__ import annotations

import hashlib
import io
from functools import partial
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import CoarseConfig
from pipeline.io import atomic_write_bytes, read_image
from pipeline.stage import Record

from pipeline.coarse.features import (backbone_inputs, image_to_tensor, load_backbone, pick_device,
                                      piecewise_probability, upsample_to)
from pipeline.coarse.method import GroupWork, Method, MethodSetting, NetworkPass

CAM_DECISION = 0.3  # CAM / max(CAM) at which a pixel is as likely object as not
HEAD_LR = 1e-4  # pretrained 1x1 head conv: small steps
FC_LR = 3e-3  # new classifier: learns from scratch
BATCH = 16  # images per step
WEIGHT_DECAY = 1e-4  # AdamW decay on both


def class_activation_map(head_map: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """CAM [h, w] = ReLU(sum_k w_k f_k), divided by its maximum (all-zero stays zero)."""
    cam = F.relu(torch.einsum("khw,k->hw", head_map.float(), weight.float()))
    return cam / cam.max().clamp_min(1e-6)


class CamHead(nn.Module):
    """1x1 head conv + BN + ReLU6 from the ImageNet model, global pooling, dropout and a classifier."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.conv = backbone._conv_head
        self.bn = backbone._bn1
        self.dropout = nn.Dropout(0.2)  # the backbone's own classifier dropout
        self.fc = nn.Linear(self.conv.out_channels, num_classes)

    def head_map(self, c32: torch.Tensor) -> torch.Tensor:
        return F.relu6(self.bn(self.conv(c32)))

    def forward(self, c32: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.head_map(c32).mean(dim=(2, 3))))


def train_key(records: Sequence[Record], cfg: CoarseConfig, seed: int) -> str:
    """The key the fine-tuned classifier is kept under in `dst/_cam/classifier.pt`: a hash of its training set."""
    digest = hashlib.sha256()  # of "stem:label" lines joined by newlines, then the settings; streamed
    for i, r in enumerate(records):
        digest.update(f"{chr(10) if i else ''}{r.stem}:{r.label}".encode())
    digest.update(f"|{cfg.cam_epochs}|{cfg.image_side}|{seed}".encode())
    return digest.hexdigest()[:16]


def fine_tune(head: CamHead, feats: list[torch.Tensor], targets: list[int], epochs: int, seed: int) -> list[float]:
    """Train `head` on per-image stride-32 features (one image per step group); returns mean loss per epoch."""
    for p in head.parameters():
        p.requires_grad_(True)
    for p in head.bn.parameters():
        p.requires_grad_(False)
    optimiser = torch.optim.AdamW([{"params": head.conv.parameters(), "lr": HEAD_LR},
                                   {"params": head.fc.parameters(), "lr": FC_LR}], weight_decay=WEIGHT_DECAY)
    generator = torch.Generator().manual_seed(seed)
    head.train()
    head.bn.eval()  # ImageNet statistics: batches of differently sized images, and few of them
    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(feats), generator=generator).tolist()
        total = 0.0
        for start in range(0, len(order), BATCH):
            batch = order[start:start + BATCH]
            # Images differ in size: pool each image's logits separately, then one loss over the batch.
            logits = torch.cat([head(feats[i]) for i in batch])
            loss = F.cross_entropy(logits, torch.tensor([targets[i] for i in batch], device=logits.device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        losses.append(total / len(feats))
    head.eval()
    return losses


def imagenet_mode(records: Sequence[Record], cfg: CoarseConfig) -> bool:
    """The ImageNet classifier's CAM (no fine-tuning): `cam_epochs: 0`, or fewer than two distinct labels."""
    return cfg.cam_epochs == 0 or len({r.label for r in records}) < 2


def fit_classifier(records: Sequence[Record], num_classes: int, dst: Path, cfg: CoarseConfig, max_pixels: int,
                   seed: int) -> None:
    """Device task: fine-tune the head on every record and keep it in `dst/_cam/classifier.pt`; nothing to do in
    ImageNet mode or when that file already holds the head of this training set."""
    cache, key = Path(dst) / "_cam" / "classifier.pt", train_key(records, cfg, seed)
    if imagenet_mode(records, cfg) or (cache.is_file() and
                                       torch.load(cache, map_location="cpu", weights_only=True).get("key") == key):
        return
    torch.manual_seed(seed)
    device = pick_device()
    backbone = load_backbone(device)
    with torch.no_grad():
        feats = [backbone.forward_features(image_to_tensor(read_image(r.image, max_pixels), cfg.image_side,
                                                           backbone).to(device))[-1] for r in records]
    head = CamHead(backbone, num_classes - 1).to(device)
    fine_tune(head, feats, [r.label - 1 for r in records], cfg.cam_epochs, seed)
    buf = io.BytesIO()
    torch.save({"key": key, "head": head.state_dict()}, buf)
    atomic_write_bytes(cache, buf.getvalue())


class CamMapper:
    """On a device: an image's CAM [h, w] from its backbone input [3, h', w'] (`backbone_input`) and label, with the
    ImageNet classifier or the head `fit_classifier` kept under `key`. `cam_probability` makes it a probability."""

    def __init__(self, dst: str, num_classes: int, key: str, imagenet: bool,
                 label_classes: Mapping[int, tuple[int, ...]] | None = None):
        self.label_classes = label_classes  # ImageNet mode: each label's ImageNet classes (imagenet_classes.py)
        self.device = pick_device()
        self.backbone = load_backbone(self.device)
        self.head = CamHead(self.backbone, num_classes - 1).to(self.device)
        self.imagenet = imagenet
        if imagenet:
            self.head.fc = self.backbone._fc
        else:
            cache = Path(dst) / "_cam" / "classifier.pt"
            state = torch.load(cache, map_location=self.device, weights_only=True) if cache.is_file() else {}
            if state.get("key") != key:
                raise FileNotFoundError(f"{cache}: the fine-tuned CAM classifier is missing or stale "
                                        "(fit_classifier writes it)")
            self.head.load_state_dict(state["head"])
        self.head.eval()

    @torch.no_grad()
    def __call__(self, x: np.ndarray, record: Record) -> np.ndarray:
        c32 = self.backbone.forward_features(torch.tensor(x)[None].to(self.device))[-1]
        head_map = self.head.head_map(c32)[0]
        if self.label_classes is not None:
            return label_cam(head_map, self.head.fc, self.label_classes.get(record.label, ())).cpu().numpy()
        cls = int(self.head.fc(head_map.mean(dim=(1, 2)))[None].argmax()) if self.imagenet else record.label - 1
        return class_activation_map(head_map, self.head.fc.weight[cls]).cpu().numpy()


def label_cam(head_map: torch.Tensor, fc: nn.Linear, classes: Sequence[int]) -> torch.Tensor:
    """CAM [h, w] of a label named by several ImageNet classes: the classes' weights averaged with the image's
    softmax probabilities of them (the kind of object the image shows gets the most say). No classes: no evidence,
    CAM_DECISION everywhere (probability 0.5 after `cam_probability`)."""
    if not classes:
        return torch.full(head_map.shape[1:], CAM_DECISION, device=head_map.device)
    idx = torch.tensor(classes, device=head_map.device)
    prob = fc(head_map.mean(dim=(1, 2))).softmax(0)[idx]
    return class_activation_map(head_map, (prob / prob.sum()) @ fc.weight[idx])


def cam_probability(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Foreground probability [H, W] from a CAM [h, w] (CAM_DECISION is the decision point); a CAM that is
    CAM_DECISION everywhere (`label_cam` without classes: no evidence) gives exactly 0.5 everywhere."""
    if np.all(np.asarray(cam, np.float32) == np.float32(CAM_DECISION)):
        return np.full(size, 0.5, np.float32)
    return piecewise_probability(upsample_to(cam, *size), CAM_DECISION)


def method(setting: MethodSetting) -> Method:
    """`coarse.method: cam`: the classifier fitted on every record first (one task on a whole device; nothing to fit
    in ImageNet mode or when `dst/_cam` holds it), then each image's CAM (`CamMapper`)."""
    cfg, records = setting.coarse, setting.records
    fit = partial(fit_classifier, num_classes=setting.num_classes, dst=setting.dst, cfg=cfg,
                  max_pixels=setting.max_pixels, seed=setting.seed)
    mapper = partial(CamMapper, str(setting.dst), setting.num_classes, train_key(records, cfg, setting.seed),
                     imagenet_mode(records, cfg), setting.label_classes)
    return Method(group_work=GroupWork(fit, [records], desc="coarse cam classifier", whole_device=True),
                  network=NetworkPass(prepare=partial(backbone_inputs, side=cfg.image_side), network=mapper,
                                      finish=cam_probability))
