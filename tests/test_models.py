"""Tests of pipeline.models: Lite0 ImageNet weights, backbones, the SRM/CRM network and its loss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.efficientnet_lite import LITE0_STAGE_CHANNELS, EfficientNetLite0, load_lite0_imagenet


def _normalised(img, mean, std, size):
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def test_lite0_imagenet_weights_classify_chelsea_as_a_cat():
    skimage_data = pytest.importorskip("skimage.data")
    torch.manual_seed(0)
    model = load_lite0_imagenet(EfficientNetLite0()).eval()
    x = _normalised(skimage_data.chelsea(), model.mean, model.std, (224, 224))
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0]
    assert 281 <= int(probs.argmax()) <= 285  # ImageNet cat classes (tabby ... Egyptian cat)
    assert float(probs[281:286].sum()) > 0.8
    # and the coffee photo is not a cat
    x = _normalised(skimage_data.coffee(), model.mean, model.std, (224, 224))
    with torch.no_grad():
        probs = model(x).softmax(dim=1)[0]
    assert float(probs[281:286].sum()) < 0.05


def test_lite0_features_have_strides_4_8_16_32_for_odd_sizes():
    model = EfficientNetLite0().eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 70, 97))
    assert [f.shape[1] for f in feats] == list(LITE0_STAGE_CHANNELS)
    # TF "SAME" padding: every stride-2 step gives ceil(size / 2)
    assert [tuple(f.shape[-2:]) for f in feats] == [(18, 25), (9, 13), (5, 7), (3, 4)]
