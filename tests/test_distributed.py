"""Ray Train with 2 CPU workers (gloo) gives the same weights as one process with the doubled batch."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.config import TrainConfig
from pipeline.learn.engine import SeededSamples, train_model


class NoNormNet(nn.Module):
    """No BatchNorm/dropout: per-worker statistics would make shards differ from one big batch."""

    def __init__(self):
        super().__init__()
        self.mean, self.std = (0.5,) * 3, (0.25,) * 3
        self.backbone = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Conv2d(6, 3, 1)

    def forward(self, x):
        return {"out": self.head(torch.relu(self.backbone(x)))}


class FullyLabelled:
    """Random images, masks from colour thresholds, no ignore pixels (so per-worker CE means average exactly)."""

    def __init__(self, n: int = 8):
        rng = np.random.default_rng(0)
        self.items = []
        for _ in range(n):
            img = rng.random((3, 12, 12)).astype(np.float32)
            self.items.append((torch.from_numpy(img), torch.from_numpy((img[0] * 3).astype(np.int64).clip(0, 2))))

    def __len__(self):
        return len(self.items)

    def get(self, index, rng):
        x, y = self.items[index]
        if rng.random() < 0.5:  # seeded flip: the augmentation must follow the global sample index
            return x.flip(-1), y.flip(-1)
        return x, y


def test_round_robin_shards_partition_the_global_stream():
    view = SeededSamples(FullyLabelled(), seed=1)
    per_step, world = 4, 2
    shards = [list(range(r, 3 * per_step, world)) for r in range(world)]
    assert sorted(shards[0] + shards[1]) == list(range(3 * per_step)) and not set(shards[0]) & set(shards[1])
    assert [view.index_of(k) for k in range(8)] == [SeededSamples(FullyLabelled(), 1).index_of(k) for k in range(8)]


@pytest.mark.slow
def test_two_ray_train_workers_match_one_process(tmp_path, ray_cluster):
    import sys

    from ray import cloudpickle

    from pipeline.learn.distributed import train_distributed

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import this test module

    cfg2 = TrainConfig(iterations=6, batch_size=2, lr=0.05, warmup_iters=1, optimizer="sgd", checkpoint_every=3,
                       log_every=3, weight_decay=0.0)
    cfg1 = TrainConfig(**{**cfg2.__dict__, "batch_size": 4})
    torch.manual_seed(3)
    single = train_model(NoNormNet(), FullyLabelled(), cfg1, tmp_path / "one", seed=3, device="cpu")

    def make_model():
        torch.manual_seed(3)
        return NoNormNet()

    double = train_distributed(make_model, FullyLabelled, cfg2, tmp_path / "two", seed=3, num_workers=2)
    a, b = torch.load(single, weights_only=True), torch.load(double, weights_only=True)
    init = make_model().state_dict()
    for k in a:
        moved = (a[k] - init[k]).abs().max()
        assert moved > 1e-3, k  # training really changed the weights...
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), (k, (a[k] - b[k]).abs().max())  # ...identically
    assert (tmp_path / "two" / "log.csv").read_text().count("\n") == 3  # header + iterations 3 and 6 (rank 0 only)
