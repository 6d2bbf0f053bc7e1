"""Lovász-softmax (pipeline.models.losses.lovasz_softmax, train.lovasz_weight): hand-computed values, the 1 - IoU
identity on one-hot predictions, ignore, the pixel stride inside SegLoss, and bad settings."""
import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.config import TrainConfig
from pipeline.models import SegLoss
from pipeline.models.losses import lovasz_softmax


def _two_class_logits(p0: list[float]) -> torch.Tensor:
    """[1, 2, 1, N] logits whose softmax gives class 0 the probabilities p0."""
    p = torch.tensor(p0, dtype=torch.float64)
    logits = torch.zeros(1, 2, 1, len(p0), dtype=torch.float64)
    logits[0, 0, 0] = torch.log(p / (1 - p))
    return logits


def test_hand_computed_two_classes_with_an_ignored_pixel():
    # labels 0 0 1 1 (+ one ignored pixel), p(class 0) = .9 .4 .3 .2: both classes have errors .1 .6 .3 .2.
    # class 0, sorted errors .6 .3 .2 .1 on labels 1 0 0 1: Jaccard losses 1/2, 2/3, 3/4, 1 -> steps 1/2, 1/6, 1/12, 1/4
    # class 1, sorted errors .6 .3 .2 .1 on labels 0 1 1 0: Jaccard losses 1/3, 2/3, 1, 1 -> steps 1/3, 1/3, 1/3, 0
    class0 = 0.6 / 2 + 0.3 / 6 + 0.2 / 12 + 0.1 / 4
    class1 = (0.6 + 0.3 + 0.2) / 3
    logits = _two_class_logits([0.9, 0.4, 0.3, 0.2, 0.5]).requires_grad_()
    target = torch.tensor([[[0, 0, 1, 1, 255]]])
    loss = lovasz_softmax(logits, target)
    assert loss.item() == pytest.approx((class0 + class1) / 2, rel=1e-6)
    loss.backward()
    assert logits.grad[0, :, 0, 4].abs().sum() == 0  # the ignored pixel gets no gradient
    assert logits.grad[0, 0, 0, 1] < 0  # raising p(class 0) at the mislabelled pixel 1 lowers the loss


def test_one_hot_predictions_give_one_minus_iou_of_the_present_classes():
    g = torch.Generator().manual_seed(0)
    num_classes = 5
    target = torch.randint(0, num_classes - 1, (2, 6, 7), generator=g)  # class 4 never present
    target[0, 0, :3] = 255
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.6, target.clamp(max=num_classes - 1),
                       torch.randint(0, num_classes, target.shape, generator=g))
    logits = 30.0 * F.one_hot(pred.clamp(max=num_classes - 1), num_classes).permute(0, 3, 1, 2).double()
    valid = target != 255
    ious = []
    for c in target[valid].unique().tolist():
        inter = ((pred == c) & (target == c) & valid).sum().item()
        union = (((pred == c) | (target == c)) & valid).sum().item()
        ious.append(inter / union)
    expected = 1 - sum(ious) / len(ious)  # 1 - mIoU over the classes in the labels (class 4 does not count)
    assert lovasz_softmax(logits, target).item() == pytest.approx(expected, abs=1e-6)  # scored in float32


def test_segloss_adds_the_weighted_lovasz_on_every_strided_pixel():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    target = torch.randint(0, 3, (2, 8, 8), generator=g)
    ce = F.cross_entropy(logits, target)
    loss = SegLoss(0.4, False, 0.7, 1, lovasz_weight=0.5, lovasz_stride=2)({"out": logits}, target)
    assert loss.item() == pytest.approx((ce + 0.5 * lovasz_softmax(logits[:, :, ::2, ::2],
                                                                   target[:, ::2, ::2])).item(), rel=1e-6)
    from_config = SegLoss.from_config(TrainConfig(lovasz_weight=0.5, lovasz_stride=2))  # what training builds
    assert from_config({"out": logits}, target).item() == pytest.approx(loss.item(), rel=1e-6)
    off_grid = target.clone()
    off_grid[:, 1::2, :] = 255  # labels only where the stride-2 grid does not look: no Lovász term at all
    off_grid[:, :, 1::2] = 255
    off_grid[:, ::2, ::2] = 255
    off_grid[0, 1, 1] = 2
    only_ce = SegLoss(0.4, False, 0.7, 1, lovasz_weight=0.5, lovasz_stride=2)({"out": logits}, off_grid)
    assert only_ce.item() == pytest.approx(F.cross_entropy(logits, off_grid, ignore_index=255).item(), rel=1e-6)


def test_bf16_logits_are_scored_in_float32_and_bad_settings_name_their_key():
    logits = _two_class_logits([0.9, 0.4, 0.3, 0.2]).float()
    target = torch.tensor([[[0, 0, 1, 1]]])
    bf16 = lovasz_softmax(logits.bfloat16(), target)
    assert bf16.dtype == torch.float32
    assert bf16.item() == pytest.approx(lovasz_softmax(logits, target).item(), abs=0.01)
    assert lovasz_softmax(logits, torch.full_like(target, 255)).item() == 0.0
    with pytest.raises(ValueError, match="train.lovasz_weight"):
        SegLoss(0.4, False, 0.7, 1, lovasz_weight=-1.0)
    with pytest.raises(ValueError, match="train.lovasz_stride"):
        SegLoss(0.4, False, 0.7, 1, lovasz_weight=1.0, lovasz_stride=0)
    assert math.isfinite(SegLoss(0.4, True, 0.7, 1, lovasz_weight=1.0)({"out": logits}, target).item())
