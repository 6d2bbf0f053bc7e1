"""Tests of the Semantic Refinement Module: bilinear at init, exact warping, convex offsets, learning a known shift."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.srm import SemanticRefinement, convex_combine, warp




@pytest.mark.parametrize("use_mask", [True, False])
def test_untrained_srm_equals_bilinear_upsampling(use_mask):
    torch.manual_seed(0)
    srm = SemanticRefinement(channels=8, kernel=3, use_mask=use_mask)
    low, high = torch.randn(2, 8, 7, 11), torch.randn(2, 8, 13, 21)  # non-integer scale factors too
    expected = F.interpolate(low, size=(13, 21), mode="bilinear", align_corners=False)
    assert torch.allclose(srm(low, high), expected, atol=1e-5)


def test_warp_by_whole_pixels_is_a_shift():
    low = torch.arange(30.0).view(1, 1, 5, 6)
    offset = torch.zeros(1, 2, 5, 6)
    offset[:, 0] = 1.0  # sample one pixel to the right (same resolution)
    out = warp(low, offset)
    assert torch.allclose(out[..., :-1], low[..., 1:], atol=1e-5)
    assert torch.allclose(out[..., -1], low[..., -1], atol=1e-5)  # border padding at the right edge
    offset[:, 0], offset[:, 1] = 0.0, -0.5  # half a pixel up: mean of each row and the one above
    out = warp(low, offset)
    assert torch.allclose(out[..., 1:, :], (low[..., 1:, :] + low[..., :-1, :]) / 2, atol=1e-5)


def test_convex_combination_hand_computed():
    offset = torch.zeros(1, 2, 3, 3)
    offset[0, 0] = torch.tensor([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]])
    offset[0, 1] = -offset[0, 0]
    logits = torch.full((1, 9, 3, 3), -1e4)
    logits[:, 4] = 0.0  # all weight on the centre: identity
    assert torch.allclose(convex_combine(offset, logits, 3), offset)
    logits = torch.zeros(1, 9, 3, 3)  # uniform weights: 3x3 box mean with replicated borders
    out = convex_combine(offset, logits, 3)
    assert out[0, 0, 1, 1].item() == pytest.approx(5.0)
    # top-left corner, replicated: rows (1,1,2),(1,1,2),(4,4,5) -> sum 21
    assert out[0, 0, 0, 0].item() == pytest.approx(21 / 9)
    assert out[0, 1, 0, 0].item() == pytest.approx(-21 / 9)
    logits = torch.full((1, 9, 3, 3), -1e4)
    logits[:, 5] = 0.0  # all weight on the right neighbour
    assert out.shape == (1, 2, 3, 3)
    assert convex_combine(offset, logits, 3)[0, 0, 1, 1].item() == pytest.approx(6.0)


@pytest.mark.parametrize("kernel", [3, 5])
def test_convex_combination_replicates_edges_like_f_pad(kernel: int):
    """The concatenated edge replication equals F.pad(mode="replicate"), values and gradients, channels_last too."""
    torch.manual_seed(0)
    offset = torch.randn(2, 2, 5, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    logits = torch.randn(2, kernel * kernel, 5, 7)
    out = convex_combine(offset, logits, kernel)
    padded = F.pad(offset, (kernel // 2,) * 4, mode="replicate")
    neighbours = F.unfold(padded, kernel).view(2, 2, kernel * kernel, 5, 7)
    expected = (neighbours * torch.softmax(logits, dim=1).unsqueeze(1)).sum(dim=2)
    assert torch.allclose(out, expected, atol=1e-6)
    weights = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * weights).sum(), offset)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), offset)
    assert torch.allclose(grad, grad_expected, atol=1e-6)


def _wave(ys: torch.Tensor, xs: torch.Tensor, dy: float, dx: float) -> torch.Tensor:
    """4 channels of smooth sinusoids evaluated at (y - dy, x - dx): the field shifted by (dy, dx) pixels."""
    freqs = ((0.35, 0.10, 0.3), (-0.15, 0.40, 1.1), (0.25, 0.30, 2.0), (0.45, -0.20, 0.7))  # (fy, fx, phase)
    return torch.stack([torch.sin(fy * (ys - dy) + fx * (xs - dx) + ph) for fy, fx, ph in freqs])[None]


@pytest.mark.parametrize("use_mask", [True, False])
def test_srm_learns_a_known_subpixel_shift_and_beats_bilinear(use_mask):
    torch.manual_seed(0)
    size, stride, dy, dx = 32, 2, 0.6, -1.3  # low-res features lag the high-res ones by (0.6, -1.3) pixels
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    target = _wave(yy, xx, 0.0, 0.0)
    low_centres = torch.arange(size // stride) * stride + stride / 2  # low-res pixel centres in high-res units
    ly, lx = torch.meshgrid(low_centres, low_centres, indexing="ij")
    low = _wave(ly, lx, dy, dx)  # the shifted field, sampled at half resolution
    bilinear_mse = F.mse_loss(F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False), target)

    srm = SemanticRefinement(channels=4, kernel=3, use_mask=use_mask)
    opt = torch.optim.Adam(srm.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        loss = F.mse_loss(srm(low, target), target)
        loss.backward()
        opt.step()
    with torch.no_grad():
        srm_mse = F.mse_loss(srm(low, target), target).item()
        offset = srm.predict_offset(low, target)[..., 4:-4, 4:-4].mean(dim=(0, 2, 3))  # away from borders
    assert srm_mse < 0.2 * bilinear_mse.item(), (srm_mse, bilinear_mse.item())
    # sampling the lagging field at p + (dx, dy) gives the target at p
    assert offset[0].item() == pytest.approx(dx, abs=0.25) and offset[1].item() == pytest.approx(dy, abs=0.25)
    assert math.isfinite(srm_mse)
