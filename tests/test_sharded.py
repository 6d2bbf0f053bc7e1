"""Sharded neural inference on Ray Data (pipeline/orchestration/sharded.py) and multi-GPU training: the actor pool
and training worker decisions, and sharded runs of the predict stage and the DDT coarse stage writing the same bytes
as the serial path and resuming per image. Both paths run torch on one thread here: the serial one by conftest,
the sharded one as two actors on the 2-CPU test cluster (CPU kernels split their sums by thread count, so byte
equality holds for equal thread counts)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fake_run import CLASSES, STEMS, make_run
from pipeline.config import load_config
from pipeline.data.weak import load_weak_dataset
from pipeline.orchestration.parallel import training_workers
from pipeline.orchestration.sharded import FILE_CPUS, ActorPlan, inference_actors
from pipeline.stage import StageContext
from stages import coarse as coarse_stage
from stages import predict, train
from test_ddt_streaming import files, tiny_images


def with_ray(cfg, enabled: bool, **ray):
    return dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, enabled=enabled, **ray))


def test_training_workers_one_per_gpu_from_two_gpus():
    assert training_workers({}) == (1, False)  # no Ray: one process
    assert training_workers({"CPU": 16.0}) == (1, False)
    assert training_workers({"CPU": 16.0, "GPU": 1.0}) == (1, True)  # one device task on the GPU
    assert training_workers({"CPU": 32.0, "GPU": 4.0}) == (4, True)  # Ray Train, data parallel


def test_inference_actors_one_per_gpu_or_a_share_of_each_node():
    gpus = [{"CPU": 8.0, "GPU": 2.0}, {"CPU": 8.0, "GPU": 1.0}, {"CPU": 4.0}]
    assert inference_actors(gpus) == ActorPlan(actors=3, num_cpus=1, num_gpus=1, threads=1)
    assert inference_actors(gpus, requested=2).actors == 2
    assert inference_actors(gpus, requested=9).actors == 3  # never more than one per GPU
    nodes = [{"CPU": 16.0}, {"CPU": 8.0}, {"CPU": 0.0}]  # a head without CPUs runs no actor
    assert inference_actors(nodes) == ActorPlan(actors=2, num_cpus=8 - FILE_CPUS, num_gpus=0, threads=8)
    two = inference_actors([{"CPU": 2.0}], requested=2)  # this machine: two actors beside the file tasks
    assert two.actors == 2 and two.threads == 1 and 2 * two.num_cpus + FILE_CPUS <= 2
    with pytest.raises(RuntimeError, match="no node"):
        inference_actors([{"CPU": 0.0}])


@pytest.mark.slow
def test_sharded_predict_writes_the_serial_bytes_and_resumes_per_image(tmp_path, ray_cluster):
    run_dir, cfg = make_run(tmp_path)
    data = load_weak_dataset(cfg.data)
    outputs = {}
    for enabled in (False, True):
        run_cfg = with_ray(cfg, enabled, actors=2, images_per_call=3)  # 4 images: batches of 3 and 1; 1 thread each
        ctx = StageContext(cfg=run_cfg, records=data.records, classes=CLASSES, run_dir=run_dir, round=1)
        out = tmp_path / f"predict_{enabled}"
        summary = predict.run(ctx, run_dir / "round1" / "train", out)
        assert summary["images"] == len(STEMS)
        outputs[enabled] = files(out)
    assert outputs[True] == outputs[False] and len(outputs[True]) == 2 * len(STEMS)

    for stem in STEMS[1:3]:  # as if killed after two images: the rerun predicts only the other two
        (out / f"{stem}.png").unlink()
        (out / f"{stem}.npz").unlink()
    summary = predict.run(ctx, run_dir / "round1" / "train", out)
    assert (summary["images"], summary["skipped"]) == (2, 2)
    assert files(out) == outputs[False]


@pytest.mark.slow
def test_sharded_ddt_maps_equal_serial(tmp_path, ray_cluster):
    records = tiny_images(tmp_path)  # labels 1, 1, 1, 2, 2, 3: three groups, one of a single image
    cfg = load_config(overrides=["coarse.method=ddt", "coarse.image_side=128", "ray.actors=2", "ray.images_per_call=2"])
    outputs = {}
    for enabled in (False, True):  # pass 1: one task per label group; pass 2: read -> actor -> write
        ctx = StageContext(cfg=with_ray(cfg, enabled), records=tuple(records), classes=("background", "a", "b", "c"),
                           run_dir=tmp_path)
        assert coarse_stage.run(ctx, None, tmp_path / f"coarse_{enabled}")["images"] == len(records)
        outputs[enabled] = files(tmp_path / f"coarse_{enabled}")
    assert outputs[True] == outputs[False]  # maps, pseudo-labels and the cached statistics of every group
    assert sum(name.startswith("_ddt/") for name in outputs[True]) == 3


@pytest.mark.slow
def test_cam_classifier_fitted_in_a_device_task_writes_the_serial_bytes(tmp_path, ray_cluster):
    records = tuple(tiny_images(tmp_path))  # three labels: the head is fine-tuned (the whole-device group work)
    cfg = load_config(overrides=["coarse.method=cam", "coarse.image_side=128", "coarse.cam_epochs=2"])
    outputs = {}
    for enabled in (False, True):
        ctx = StageContext(cfg=with_ray(cfg, enabled), records=records, classes=("background", "a", "b", "c"),
                           run_dir=tmp_path)
        assert coarse_stage.run(ctx, None, tmp_path / f"cam_{enabled}")["images"] == len(records)
        outputs[enabled] = files(tmp_path / f"cam_{enabled}")
    assert "_cam/classifier.pt" in outputs[True] and outputs[True] == outputs[False]


def test_training_uses_ray_train_on_two_gpus_or_more(tmp_path, monkeypatch):
    run_dir, cfg = make_run(tmp_path)
    ctx = StageContext(cfg=cfg, records=load_weak_dataset(cfg.data).records, classes=CLASSES, run_dir=run_dir, round=2)
    calls = []
    monkeypatch.setattr(train, "cluster_resources", lambda ray_cfg: {"CPU": 32.0, "GPU": 4.0})
    monkeypatch.setattr(train, "train_on_gpus", lambda *args: calls.append(args) or {"device": "cuda x 4"})
    assert train.run(ctx, run_dir / "crf", tmp_path / "train") == {"device": "cuda x 4"}
    (*_, warm, workers), = calls
    assert workers == 4 and warm == str(run_dir / "round1" / "train" / "model.pt")  # resumes from round 1's weights


def test_sharded_errors_reach_the_caller_with_their_type(tmp_path, ray_cluster):
    run_dir, cfg = make_run(tmp_path)
    data = load_weak_dataset(cfg.data)
    (Path(cfg.data.root) / "images" / "c.png").write_bytes(b"not a png")
    ctx = StageContext(cfg=with_ray(cfg, True), records=data.records, classes=CLASSES, run_dir=run_dir, round=1)
    from pipeline.io import ImageError

    with pytest.raises(ImageError, match="c.png"):
        predict.run(ctx, run_dir / "round1" / "train", tmp_path / "pred")


def test_one_cpu_node_runs_passes_in_one_device_task_unless_actors_are_asked_for(ray_cluster):
    from pipeline.config import RayConfig
    from pipeline.orchestration.sharded import shard

    assert not shard(RayConfig())  # the test cluster: one node, two CPUs, no GPU
    assert shard(RayConfig(actors=1))
