"""ISNet (DIS, Qin et al. ECCV 2022) in plain PyTorch, loading the fp16 ONNX export fetched by pipeline.models.weights.

    model = load_isnet_onnx(isnet_path())           # float32, eval mode, CPU; .to(device) as usual
    saliency = predict_saliency(model, rgb_uint8)   # float32 [H, W] in [0, 1]: the foreground map

Why: a class-agnostic salient-object map is a strong offline prior for weak labels, and writing the network here
(rather than running the ONNX file) lets it run on GPU under autocast, in channels_last, and in batches.

Architecture (the DIS repo's `ISNetDIS`, as found in the ONNX graph): a stride-2 3x3 conv to 64 channels, then a
U-Net of nested U-blocks (RSU7, RSU6, RSU5, RSU4, RSU4F, RSU4F down; RSU4F, RSU4, RSU5, RSU6, RSU7 up), with 2x2
ceil-mode max pools between levels and bilinear (align_corners=False) upsampling to the skip's size before each
concatenation. Six 3x3 side heads give one map per decoder level; inference uses only the first: sigmoid of side1,
upsampled to the input size. Sides 2-6 (deep-supervision heads) are kept so the weights load strictly.

What the ONNX graph shows, mirrored here:
- BatchNorm is folded into the convolutions: every "REBNCONV" is conv (with bias) + ReLU, no BN.
- Output `output` = Sigmoid(Resize(side1(.), input size)); no min-max rescaling (the DIS demo script adds one).
- Preprocessing (outside the graph): RGB resized bilinearly to 1024x1024, (x - 128) / 256 on the 0-255 scale.
- Weights are fp16 in the file; they are loaded as float32.
Module and parameter names follow the ONNX node names (e.g. stage1.rebnconv1.conv_s1), minus the BN layers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ISNET_SIZE = 1024  # input resolution the network was trained and exported at
PIXEL_MEAN = 128.0  # normalisation on the 0-255 scale: (x - 128) / 256
PIXEL_SCALE = 256.0


def _upsample_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[2:], mode="bilinear", align_corners=False)


class ConvReLU(nn.Module):
    """DIS's REBNCONV with BatchNorm folded away: 3x3 conv (dilated, with bias) + ReLU."""

    def __init__(self, in_ch: int, out_ch: int, dilation: int = 1):
        super().__init__()
        self.conv_s1 = nn.Conv2d(in_ch, out_ch, 3, padding=dilation, dilation=dilation)
        self.relu_s1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu_s1(self.conv_s1(x))


class RSU(nn.Module):
    """Residual U-block of `height` levels (RSU7 ... RSU4): a small U-Net inside a residual connection.

    rebnconvin maps to out_ch; rebnconv1..rebnconv{h-1} go down (max pool between them), rebnconv{h} is a
    dilation-2 bottom; rebnconv{h-1}d..rebnconv1d come back up, each on [deeper output upsampled, skip].
    """

    def __init__(self, height: int, in_ch: int, mid_ch: int, out_ch: int):
        super().__init__()
        self.height = height
        self.rebnconvin = ConvReLU(in_ch, out_ch)
        for i in range(1, height):
            self.add_module(f"rebnconv{i}", ConvReLU(out_ch if i == 1 else mid_ch, mid_ch))
            if i < height - 1:
                self.add_module(f"pool{i}", nn.MaxPool2d(2, stride=2, ceil_mode=True))
        self.add_module(f"rebnconv{height}", ConvReLU(mid_ch, mid_ch, dilation=2))
        for i in range(height - 1, 0, -1):
            self.add_module(f"rebnconv{i}d", ConvReLU(2 * mid_ch, out_ch if i == 1 else mid_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.height
        hxin = self.rebnconvin(x)
        skips, hx = [], hxin
        for i in range(1, h):
            hx = getattr(self, f"rebnconv{i}")(hx)
            skips.append(hx)
            if i < h - 1:
                hx = getattr(self, f"pool{i}")(hx)
        hx = getattr(self, f"rebnconv{h}")(hx)
        for i in range(h - 1, 0, -1):
            hx = getattr(self, f"rebnconv{i}d")(torch.cat((hx, skips[i - 1]), 1))
            if i > 1:
                hx = _upsample_like(hx, skips[i - 2])
        return hx + hxin


class RSU4F(nn.Module):
    """Residual U-block without pooling: dilations 1, 2, 4, 8 down and 4, 2, 1 up (for the coarsest levels)."""

    def __init__(self, in_ch: int, mid_ch: int, out_ch: int):
        super().__init__()
        self.rebnconvin = ConvReLU(in_ch, out_ch)
        self.rebnconv1 = ConvReLU(out_ch, mid_ch, dilation=1)
        self.rebnconv2 = ConvReLU(mid_ch, mid_ch, dilation=2)
        self.rebnconv3 = ConvReLU(mid_ch, mid_ch, dilation=4)
        self.rebnconv4 = ConvReLU(mid_ch, mid_ch, dilation=8)
        self.rebnconv3d = ConvReLU(2 * mid_ch, mid_ch, dilation=4)
        self.rebnconv2d = ConvReLU(2 * mid_ch, mid_ch, dilation=2)
        self.rebnconv1d = ConvReLU(2 * mid_ch, out_ch, dilation=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.rebnconvin(x)
        hx1 = self.rebnconv1(hxin)
        hx2 = self.rebnconv2(hx1)
        hx3 = self.rebnconv3(hx2)
        hx4 = self.rebnconv4(hx3)
        hx3d = self.rebnconv3d(torch.cat((hx4, hx3), 1))
        hx2d = self.rebnconv2d(torch.cat((hx3d, hx2), 1))
        return self.rebnconv1d(torch.cat((hx2d, hx1), 1)) + hxin


class ISNet(nn.Module):
    """DIS ISNet: image [B, 3, H, W] normalised as (x - 128) / 256 -> foreground probability [B, 1, H, W]."""

    def __init__(self):
        super().__init__()
        self.conv_in = nn.Conv2d(3, 64, 3, stride=2, padding=1)
        # Encoder. (DIS also defines a pool_in whose output is unused; the export drops it, so it is left out.)
        self.stage1, self.pool12 = RSU(7, 64, 32, 64), nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.stage2, self.pool23 = RSU(6, 64, 32, 128), nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.stage3, self.pool34 = RSU(5, 128, 64, 256), nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.stage4, self.pool45 = RSU(4, 256, 128, 512), nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.stage5, self.pool56 = RSU4F(512, 256, 512), nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.stage6 = RSU4F(512, 256, 512)
        # Decoder: each stage takes [deeper output upsampled, encoder skip].
        self.stage5d = RSU4F(1024, 256, 512)
        self.stage4d = RSU(4, 1024, 128, 256)
        self.stage3d = RSU(5, 512, 64, 128)
        self.stage2d = RSU(6, 256, 32, 64)
        self.stage1d = RSU(7, 128, 16, 64)
        # Side heads, finest first. Only side1 is used at inference; 2-6 are the training-time deep supervision.
        for i, ch in enumerate((64, 64, 128, 256, 512, 512), start=1):
            self.add_module(f"side{i}", nn.Conv2d(ch, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hxin = self.conv_in(x)
        hx1 = self.stage1(hxin)
        hx2 = self.stage2(self.pool12(hx1))
        hx3 = self.stage3(self.pool23(hx2))
        hx4 = self.stage4(self.pool34(hx3))
        hx5 = self.stage5(self.pool45(hx4))
        hx6 = self.stage6(self.pool56(hx5))
        hx5d = self.stage5d(torch.cat((_upsample_like(hx6, hx5), hx5), 1))
        hx4d = self.stage4d(torch.cat((_upsample_like(hx5d, hx4), hx4), 1))
        hx3d = self.stage3d(torch.cat((_upsample_like(hx4d, hx3), hx3), 1))
        hx2d = self.stage2d(torch.cat((_upsample_like(hx3d, hx2), hx2), 1))
        hx1d = self.stage1d(torch.cat((_upsample_like(hx2d, hx1), hx1), 1))
        return torch.sigmoid(_upsample_like(self.side1(hx1d), x))


def load_isnet_onnx(path: str | Path) -> ISNet:
    """Build an ISNet and fill it from the ONNX file's initializers (strict: every tensor matched), float32, eval.

    Conv nodes are paired with the module's Conv2d layers in graph order; each pair must agree in weight and bias
    shape, stride, padding and dilation, and, where the node name spells a module path ("/stage1/rebnconv1/
    conv_s1/Conv"), in name too. Any leftover node, initializer or parameter is an error.
    """
    import onnx  # only needed here: a dev dependency elsewhere in the project
    from onnx import numpy_helper

    path = Path(path)
    try:
        graph = onnx.load(str(path)).graph
    except Exception as err:  # protobuf DecodeError, OSError: all mean "not a usable ONNX file"
        raise ValueError(f"{path}: cannot read as an ONNX model ({type(err).__name__}: {err})") from err
    if any(node.op_type == "BatchNormalization" for node in graph.node):
        raise ValueError(f"{path}: graph has BatchNormalization nodes; this ISNet expects BN folded into the convs")
    inits = {t.name: t for t in graph.initializer}
    onnx_convs = [node for node in graph.node if node.op_type == "Conv"]
    model = ISNet()
    torch_convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if len(onnx_convs) != len(torch_convs):
        raise ValueError(f"{path}: {len(onnx_convs)} Conv nodes in the graph, ISNet has {len(torch_convs)} convs")

    state, used = {}, set()
    for node, (name, conv) in zip(onnx_convs, torch_convs):
        where = f"{path}: Conv node {node.name!r} (paired with {name})"
        if node.name.startswith("/") and node.name.endswith("/Conv"):
            spelled = node.name[1:-len("/Conv")].replace("/", ".")
            if spelled != name:
                raise ValueError(f"{where}: its name says {spelled}; graph order and module order disagree")
        if len(node.input) != 3 or node.input[1] not in inits or node.input[2] not in inits:
            raise ValueError(f"{where}: expected constant weight and bias inputs, got {list(node.input)}")
        attrs = {a.name: list(onnx.helper.get_attribute_value(a)) for a in node.attribute if a.name != "group"}
        want = {"strides": list(conv.stride), "dilations": list(conv.dilation), "pads": list(conv.padding) * 2,
                "kernel_shape": list(conv.kernel_size)}
        defaults = {"strides": [1, 1], "dilations": [1, 1], "pads": [0, 0, 0, 0]}  # ONNX's, when omitted
        if any(attrs.get(key, defaults.get(key)) != value for key, value in want.items()):
            raise ValueError(f"{where}: attributes {attrs} differ from the module's {want}")
        for param, init_name in (("weight", node.input[1]), ("bias", node.input[2])):
            array = numpy_helper.to_array(inits[init_name]).astype(np.float32)
            expected = tuple(getattr(conv, param).shape)
            if array.shape != expected:
                raise ValueError(f"{where}: {param} {init_name!r} has shape {array.shape}, expected {expected}")
            state[f"{name}.{param}"] = torch.from_numpy(array)
            used.add(init_name)
    unused = sorted(set(inits) - used)
    if unused:
        raise ValueError(f"{path}: {len(unused)} initializers not used by any Conv, e.g. {unused[:5]}")
    model.load_state_dict(state, strict=True)  # raises on any missing or unexpected key
    return model.eval()


def _check_image(image: np.ndarray) -> None:
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"predict_saliency expects an RGB uint8 array [H, W, 3], got {got}")


def network_input(image: np.ndarray, size: int, device: torch.device) -> torch.Tensor:
    """[1, 3, size, size] float32: the RGB uint8 image resized bilinearly, then (x - 128) / 256."""
    # torch.tensor copies: read-only arrays (decoded images, Ray objects) are fine
    x = torch.tensor(np.ascontiguousarray(image), device=device).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - PIXEL_MEAN) / PIXEL_SCALE


@torch.inference_mode()
def predict_saliency_batch(model: ISNet, images: Sequence[np.ndarray], size: int = ISNET_SIZE,
                           batch_size: int = 4) -> list[np.ndarray]:
    """Foreground maps (float32 [H, W] in [0, 1], one per image) for RGB uint8 images of any sizes.

    Each image is resized bilinearly (align_corners=False, no antialiasing, as DIS does) to size x size and
    normalised as (x - 128) / 256; the map is resized back to the image's size. Runs on the model's device and
    under whatever autocast the caller has enabled.
    """
    for image in images:
        _check_image(image)
    device = next(model.parameters()).device
    results = []
    for start in range(0, len(images), batch_size):
        group = images[start:start + batch_size]
        probs = model(torch.cat([network_input(img, size, device) for img in group])).float()
        for img, prob in zip(group, probs):
            back = F.interpolate(prob[None], size=img.shape[:2], mode="bilinear", align_corners=False)
            results.append(back[0, 0].clamp_(0.0, 1.0).cpu().numpy())
    return results


def predict_saliency(model: ISNet, image: np.ndarray, size: int = ISNET_SIZE) -> np.ndarray:
    """Foreground map (float32 [H, W] in [0, 1]) of one RGB uint8 image; see predict_saliency_batch."""
    return predict_saliency_batch(model, [image], size=size)[0]
