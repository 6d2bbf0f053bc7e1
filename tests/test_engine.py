"""Training engine: schedule, OHEM, parameter groups, seeded data order, learning, exact resume, logs."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.config import TrainConfig
from pipeline.learn.engine import SeededSamples, build_optimizer, lr_factor, train_model
from pipeline.data.transforms import TrainTransform


class TinySegNet(nn.Module):
    """Backbone conv + 1x1 head; 'aux' in training like the real model."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.mean, self.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.1))
        self.head = nn.Conv2d(8, num_classes, 1)
        self.aux_head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        f = self.backbone(x)
        out = {"out": self.head(f)}
        if self.training:
            out["aux"] = self.aux_head(f)
        return out


class ColourSquares:
    """Class = colour of a random square on a grey background; augmentation from the rng passed in."""

    colours = np.array([[128, 128, 128], [230, 30, 30], [30, 30, 230]], np.uint8)

    def __init__(self, n: int = 6, size: int = 24, crash_after: int | None = None):
        rng = np.random.default_rng(123)
        self.items = []
        for i in range(n):
            mask = np.zeros((size, size), np.uint8)
            y, x = rng.integers(0, size // 2, 2)
            mask[y:y + size // 2, x:x + size // 2] = 1 + i % 2
            mask[0, :] = 255  # an ignored row
            self.items.append((self.colours[np.minimum(mask, 2)], mask))
        self.transform = TrainTransform((16, 16), (0.75, 1.25), True, 0.1, (0.5,) * 3, (0.25,) * 3)
        self.crash_after, self.calls = crash_after, 0

    def __len__(self):
        return len(self.items)

    def get(self, index, rng):
        self.calls += 1
        if self.crash_after is not None and self.calls > self.crash_after:
            raise RuntimeError("simulated crash")
        return self.transform(*self.items[index], rng)


def small_cfg(**kw) -> TrainConfig:
    base = dict(iterations=6, batch_size=2, crop=(16, 16), lr=0.01, warmup_iters=2, checkpoint_every=3,
                log_every=2)
    base.update(kw)
    return TrainConfig(**base)


def test_lr_factor_hand_computed():
    cfg = TrainConfig(iterations=10, warmup_iters=2)  # warm-up (s + 1) / 2, then (1 - s / 10) ** 0.9
    assert [lr_factor(s, cfg) for s in (0, 1, 2, 5, 10)] == pytest.approx([0.5, 1.0, 0.8 ** 0.9, 0.5 ** 0.9, 0.0])
    cfg = TrainConfig(iterations=4, warmup_iters=0)
    assert lr_factor(2, cfg) == pytest.approx(0.5 ** 0.9)


def test_backbone_lr_and_no_decay_groups():
    model = TinySegNet()
    opt = build_optimizer(model, TrainConfig(lr=0.1, backbone_lr_mult=0.1, weight_decay=0.01, optimizer="sgd"))
    bb = {id(p) for p in model.backbone.parameters()}
    for g in opt.param_groups:
        is_bb = id(g["params"][0]) in bb
        assert g["lr"] == pytest.approx(0.01 if is_bb else 0.1)
        assert g["weight_decay"] == (0.01 if g["params"][0].ndim > 1 else 0.0)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_seeded_samples_cover_each_epoch_once_and_depend_on_seed():
    data = ColourSquares(n=5)
    view = SeededSamples(data, seed=3)
    order = [view.index_of(k) for k in range(15)]
    for e in range(3):
        assert sorted(order[5 * e:5 * e + 5]) == [0, 1, 2, 3, 4]
    assert order != [SeededSamples(data, seed=4).index_of(k) for k in range(15)]
    x1, y1 = view[7]
    x2, y2 = SeededSamples(data, seed=3)[7]
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_training_learns_and_writes_logs_and_best(tmp_path):
    torch.manual_seed(0)
    model = TinySegNet()
    data = ColourSquares()
    calls = []

    def val_fn(m):
        assert not m.training
        x, y = data.transform(*data.items[0], np.random.default_rng(0))
        pred = m(x[None])["out"].argmax(1)[0]
        acc = float((pred == y)[y != 255].float().mean())
        calls.append(acc)
        return {"miou": acc, "pixel_acc": acc}

    cfg = small_cfg(iterations=40, lr=0.05, checkpoint_every=20, log_every=10, optimizer="adamw")
    path = train_model(model, data, cfg, tmp_path, seed=0, device="cpu", val_fn=val_fn)
    assert path == tmp_path / "model.pt" and path.exists()
    assert len(calls) == 2 and calls[-1] > 0.9  # separable colours: near-perfect after 40 steps
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert [int(r["iteration"]) for r in rows] == [10, 20, 30, 40]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert rows[1]["val_miou"] != "" and rows[0]["val_miou"] == ""
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["miou"] == pytest.approx(max(calls))
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 40 and set(ckpt) >= {"model", "optimizer", "scheduler", "torch_rng"}


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_resume_after_crash_equals_uninterrupted_run(tmp_path, optimizer):
    cfg = small_cfg(optimizer=optimizer)
    torch.manual_seed(0)
    ref_model = TinySegNet()
    init = {k: v.clone() for k, v in ref_model.state_dict().items()}
    ref = train_model(ref_model, ColourSquares(), cfg, tmp_path / "ref", seed=7, device="cpu")

    crashing = TinySegNet()
    crashing.load_state_dict(init)
    per_step = cfg.batch_size
    with pytest.raises(RuntimeError, match="simulated crash"):  # dies inside iteration 4, after the checkpoint at 3
        train_model(crashing, ColourSquares(crash_after=3 * per_step + 1), cfg, tmp_path / "run", seed=7,
                    device="cpu")
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["iteration"] == 3
    resumed = TinySegNet()  # fresh process-like start: weights come from last.pt
    out = train_model(resumed, ColourSquares(), cfg, tmp_path / "run", seed=7, device="cpu", resume=True)
    a, b = torch.load(ref, weights_only=True), torch.load(out, weights_only=True)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [int(r["iteration"]) for r in rows] == [2, 4, 6]
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert all(torch.equal(b[k], last["model"][k]) for k in b)

    other = TinySegNet()
    other.load_state_dict(init)
    diff = train_model(other, ColourSquares(), cfg, tmp_path / "seed8", seed=8, device="cpu")
    c = torch.load(diff, weights_only=True)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed matters


@pytest.mark.slow
def test_full_stage_trains_and_evaluates_a_folder_dataset(tmp_path):
    from PIL import Image

    from pipeline.config import load_config
    from stages.full import run

    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            mask = np.zeros((32, 40), np.uint8)
            mask[8:24, 10 + i:30] = 1
            (tmp_path / "data" / split / "images").mkdir(parents=True, exist_ok=True)
            (tmp_path / "data" / split / "masks").mkdir(parents=True, exist_ok=True)
            img = ColourSquares.colours[mask] + rng.integers(0, 20, (32, 40, 3)).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "data" / split / "images" / f"im{i}.png")
            Image.fromarray(mask).save(tmp_path / "data" / split / "masks" / f"im{i}.png")
    overrides = [f"run.root={tmp_path / 'runs'}", "run.name=t", "full.dataset=folder", f"full.root={tmp_path / 'data'}",
                 "full.folder_classes=2", "model.pretrained=none", "model.width=16", "train.iterations=2",
                 "train.batch_size=2", "train.crop=[32,32]", "train.checkpoint_every=2",
                 "test_time.flip=true", "full.eval_window=24"]
    config = Path(__file__).resolve().parent.parent / "configs" / "full_camvid.yaml"
    summary = run(load_config(config, overrides=overrides))
    out = tmp_path / "runs" / "t" / "full"
    assert {"model.pt", "best.pt", "last.pt", "log.csv", "metrics.json"} <= {p.name for p in out.iterdir()}
    assert summary["val_images"] == 2 and summary["weights"] == "best.pt"
    assert 0.0 <= summary["miou"] <= 1.0 and set(summary["per_class_iou"]) == {"0", "1"}


def test_amp_always_trains_in_bf16_on_cpu_and_still_learns(tmp_path):
    seen = []
    model = TinySegNet()
    model.head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    cfg = small_cfg(iterations=40, lr=0.05, checkpoint_every=20, log_every=10, optimizer="adamw", amp="always")
    train_model(model, ColourSquares(), cfg, tmp_path, seed=0, device="cpu")
    assert seen and set(seen) == {torch.bfloat16}  # the convolutions ran under bf16 autocast
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert float(rows[-1]["loss"]) < 0.5 * float(rows[0]["loss"])
    off = []
    plain = TinySegNet()
    plain.head.register_forward_hook(lambda m, i, o: off.append(o.dtype))
    train_model(plain, ColourSquares(), small_cfg(iterations=2), tmp_path / "fp32", seed=0, device="cpu")
    assert set(off) == {torch.float32}  # default: CPU training stays in float32


def test_channels_last_always_gives_the_same_weights_as_the_default_layout(tmp_path):
    torch.manual_seed(0)
    init = TinySegNet().state_dict()
    runs = {}
    for channels_last in (False, True):
        model = TinySegNet()
        model.load_state_dict(init)
        model.backbone[3].p = 0.0  # dropout draws its mask in memory order, which differs between the layouts
        cfg = small_cfg(optimizer="sgd", channels_last="always" if channels_last else "cuda")
        runs[channels_last] = torch.load(train_model(model, ColourSquares(), cfg, tmp_path / str(channels_last),
                                                     seed=0, device="cpu"), weights_only=True)
        conv = model.backbone[0].weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == channels_last  # the option took effect
        assert channels_last or conv.is_contiguous()
    for k, v in runs[False].items():
        assert torch.allclose(v.float(), runs[True][k].float(), atol=1e-5), k
    assert not torch.equal(runs[False]["head.weight"], init["head.weight"])  # it trained
