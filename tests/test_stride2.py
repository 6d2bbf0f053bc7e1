"""model.stride2: the encoders' stride-2 features, the extra decoder level, and what it lets through."""
import pytest
import torch
import torch.nn.functional as F

from pipeline.config import ModelConfig, load_config
from pipeline.models import build_backbone, build_model
from pipeline.models.segnet import Stride2Level
from pipeline.runner import plan, stage_keys, step_hashes


@pytest.mark.parametrize("name", ["lite0", "resnet18"])
def test_encoders_return_stride2_features_before_the_same_four_stages(name):
    torch.manual_seed(0)
    encoder = build_backbone(name, "none").eval()
    x = torch.randn(1, 3, 64, 96)
    stride2, stages = encoder.stride2_and_stages(x)
    assert stride2.shape == (1, encoder.stride2_channels, 32, 48)
    assert [s.shape[1] for s in stages] == list(encoder.channels)
    assert [s.shape[-1] for s in stages] == [24, 12, 6, 3]
    assert all(torch.equal(a, b) for a, b in zip(stages, encoder(x)))


def test_stride2_level_learns_a_two_pixel_line_a_stride4_head_cannot_draw():
    """A 2-pixel-wide line sits on one half of a 4-pixel cell; p4 only says "line in this cell", the stride-2
    features say which half. Through the level and a 1x1 classifier (x2 bilinear to the input) the line must come
    out exactly; bilinear x4 from the cell paints all 4 columns (IoU 1/2 at best)."""
    torch.manual_seed(0)
    target = torch.zeros(2, 16, 24, dtype=torch.long)
    p4, stride2 = torch.zeros(2, 4, 4, 6), torch.zeros(2, 2, 8, 12)
    for half in (0, 1):  # image 0: input columns 8-9, image 1: 10-11 (coarse column 2)
        target[half, :, 8 + 2 * half: 10 + 2 * half] = 1
        p4[half, 0, :, 2] = 1.0
        stride2[half, 0, :, 4 + half] = 1.0
    level, classify = Stride2Level(2, 4, 4, use_srm=False, srm_mask=True, srm_kernel=3), torch.nn.Conv2d(4, 2, 1)

    def logits() -> torch.Tensor:
        return F.interpolate(classify(level(p4, stride2)), size=(16, 24), mode="bilinear", align_corners=False)

    def line_iou() -> float:
        with torch.no_grad():
            pred = logits().argmax(1) == 1
        return ((pred & (target == 1)).sum() / (pred | (target == 1)).sum()).item()

    before = line_iou()
    opt = torch.optim.Adam([*level.parameters(), *classify.parameters()], lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(logits(), target).backward()
        opt.step()
    assert before < 0.5 and line_iou() == 1.0


@pytest.mark.parametrize("srm,upsample", [(True, "bilinear"), (False, "convex")])
def test_segnet_with_stride2_trains_end_to_end_and_keeps_default_hashes(srm, upsample):
    torch.manual_seed(0)
    cfg = ModelConfig(pretrained="none", width=16, stride2=True, srm=srm, crm=srm, upsample=upsample)
    model = build_model(cfg, 3).train()
    seen = {}
    model.head.conv.register_forward_hook(lambda m, args, out: seen.update(head_in=args[0].shape))
    out = model(torch.randn(2, 3, 62, 70))  # 62 x 70: not a multiple of 4
    assert out["out"].shape == out["aux"].shape == (2, 3, 62, 70)
    assert seen["head_in"] == (2, 8, 31, 35)  # width / 2 channels at stride 2
    out["out"].logsumexp(1).mean().backward()
    assert model.stride2.lateral[0].weight.grad.abs().sum() > 0
    plain, extra = load_config(), load_config(overrides=["model.stride2=true"])
    train_step = next(s for s in plan(plain) if s.name == "round1/train")
    assert "stride2" not in stage_keys(plain, train_step)["model"]  # runs made before the key keep their hash
    assert step_hashes(plain, plan(plain))["round1/train"] != step_hashes(extra, plan(extra))["round1/train"]
