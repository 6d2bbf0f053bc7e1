"""Convex (RAFT-style) upsampling of the logits: hand-computed weights, bilinear at init, learns a thin line."""
import torch
import torch.nn.functional as F

from pipeline.config import ModelConfig, load_config
from pipeline.models import build_model
from pipeline.models.upsample import ConvexUpsample, bilinear_neighbour_weights, convex_upsample
from pipeline.runner import plan, stage_keys, step_hashes


def test_bilinear_neighbour_weights_by_hand():
    w = bilinear_neighbour_weights(2)  # sub-pixel centres at -1/4 and +1/4 of a cell from its centre
    assert w.shape == (9, 2, 2)
    assert torch.allclose(w.sum(0), torch.ones(2, 2))
    # top-left sub-pixel: 3/4 of the cell itself and 1/4 of the one above/left in each direction
    assert w[4, 0, 0] == 0.75 * 0.75 and w[0, 0, 0] == 0.25 * 0.25 and w[1, 0, 0] == 0.25 * 0.75
    assert w[8, 0, 0] == 0 and w[2, 0, 0] == 0  # the bottom-right and top-right neighbours are not used
    w4 = bilinear_neighbour_weights(4)
    centre_column = w4[[1, 4, 7]].sum(0)  # the horizontal 1-D weight of the cell's own column, per sub-pixel
    assert torch.allclose(centre_column[0], torch.tensor([0.625, 0.875, 0.875, 0.625]))


def test_untrained_module_is_exactly_bilinear_including_borders():
    torch.manual_seed(0)
    up = ConvexUpsample(channels=8, factor=4)
    logits, features = torch.randn(2, 5, 6, 7), torch.randn(2, 8, 6, 7)
    expected = F.interpolate(logits, size=(24, 28), mode="bilinear", align_corners=False)
    assert torch.allclose(up(logits, features, (24, 28)), expected, atol=1e-5)
    odd = up(logits, features, (23, 27))  # not 4 x the coarse size: a final resize to the asked size
    assert odd.shape == (2, 5, 23, 27)


def test_one_hot_weights_on_the_centre_give_nearest_neighbour_upsampling():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    logits = torch.full((1, 9 * 4, 3, 4), -50.0)
    logits[:, 4 * 4:5 * 4] = 50.0  # neighbour 4 (the cell itself) for all 2x2 sub-pixels
    assert torch.allclose(convex_upsample(x, logits, 2), x.repeat_interleave(2, 2).repeat_interleave(2, 3), atol=1e-6)


def test_learns_to_put_a_one_pixel_line_on_its_sub_pixel_column():
    """The coarse logits say "line" for a whole 4-pixel-wide column of cells; the features say on which of the
    cell's 4 sub-pixel columns the 1-pixel line lies. Bilinear upsampling paints the line ~4 pixels wide; the
    convex weights must learn to take "line" only on that sub-pixel column and background from the neighbours."""
    torch.manual_seed(0)
    h, w, factor = 4, 6, 4
    target = torch.zeros(4, h * factor, w * factor, dtype=torch.long)
    features = torch.zeros(4, 4, h, w)
    logits = torch.zeros(4, 2, h, w)
    for b, sub in enumerate(range(4)):  # one image per sub-pixel position, the line in coarse column 2
        target[b, :, 2 * factor + sub] = 1
        features[b, sub, :, 2] = 1.0  # one-hot sub-pixel column at the line's cells, zeros elsewhere
        logits[b, 1, :, 2], logits[b, 0, :, :2], logits[b, 0, :, 3:] = 4.0, 4.0, 4.0
    up = ConvexUpsample(channels=4, factor=factor)

    def line_iou() -> float:
        with torch.no_grad():
            pred = up(logits, features, (h * factor, w * factor)).argmax(1) == 1
        return ((pred & (target == 1)).sum() / (pred | (target == 1)).sum()).item()

    before = line_iou()
    opt = torch.optim.Adam(up.parameters(), lr=0.1)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(up(logits, features, (h * factor, w * factor)), target).backward()
        opt.step()
    assert before < 0.5 and line_iou() == 1.0


def test_segnet_with_convex_upsampling_trains_and_keeps_default_hashes():
    torch.manual_seed(0)
    model = build_model(ModelConfig(pretrained="none", width=16, upsample="convex", aux=False), 3).train()
    out = model(torch.randn(2, 3, 62, 70))["out"]  # 62 x 70: not a multiple of 4
    assert out.shape == (2, 3, 62, 70)
    out.logsumexp(1).mean().backward()
    assert model.upsample.weights.weight.grad.abs().sum() > 0
    plain, convex = load_config(), load_config(overrides=["model.upsample=convex"])
    train_step = next(s for s in plan(plain) if s.name == "round1/train")
    assert "upsample" not in stage_keys(plain, train_step)["model"]  # runs made before the key keep their hash
    assert step_hashes(plain, plan(plain))["crf"] == step_hashes(convex, plan(convex))["crf"]
    assert step_hashes(plain, plan(plain))["round1/train"] != step_hashes(convex, plan(convex))["round1/train"]
