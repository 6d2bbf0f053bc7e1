"""Stage `predict`: the class restriction for unlabelled classes, the round ensemble, outlier reset, and the wiring."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from fake_run import CLASSES, LABELS, SIDE, STEMS, make_run
from pipeline.data.weak import PseudoLabelDataset, load_weak_dataset
from pipeline.io import load_mask, load_probs, save_mask, save_probs
from pipeline.stage import StageContext, training_labels
from stages import predict, train


def test_restrict_classes_by_hand():
    probs = np.zeros((4, 1, 4), np.float32)  # 4 classes, 4 pixels; image label 1
    probs[:, 0, 0] = (0.7, 0.2, 0.1, 0.0)  # background wins
    probs[:, 0, 1] = (0.1, 0.6, 0.2, 0.1)  # the label wins
    probs[:, 0, 2] = (0.1, 0.1, 0.6, 0.2)  # unlabelled class 2 wins (25 % of the image)
    probs[:, 0, 3] = (0.2, 0.2, 0.2, 0.4)  # unlabelled class 3 wins
    soft, ids, dropped = predict.restrict_classes(probs, 1, keep_other=False)
    assert ids.tolist() == [0, 1] and dropped.tolist() == [[False, False, True, True]]
    np.testing.assert_allclose(soft[:, 0, 0], (0.7 / 0.9, 0.2 / 0.9), rtol=1e-6)  # renormalised over {0, 1}
    soft, ids, dropped = predict.restrict_classes(probs, 1, keep_other=True)  # both win >= 1 % of the pixels
    assert ids.tolist() == [0, 1, 2, 3] and not dropped.any()


def test_mix_probs_by_hand():
    net = np.array([[[0.8]], [[0.2]]], np.float32)  # ids (0, 1)
    prev = np.array([[[0.1]], [[0.3]], [[0.6]]], np.float32)  # ids (0, 1, 2)
    out, ids = predict.mix_probs(net, np.array([0, 1]), prev, np.array([0, 1, 2]), 0.25)
    assert ids.tolist() == [0, 1, 2]
    np.testing.assert_allclose(out[:, 0, 0], (0.75 * 0.8 + 0.25 * 0.1, 0.75 * 0.2 + 0.25 * 0.3, 0.25 * 0.6),
                               rtol=1e-6)


def test_stage_writes_the_network_map_over_background_and_the_label(tmp_path):
    run_dir, cfg = make_run(tmp_path)
    cfg = dataclasses.replace(cfg, test_time=dataclasses.replace(cfg.test_time, flip=False))
    assert training_labels(1) == "crf" and training_labels(3) == "round2/crf"
    data = load_weak_dataset(cfg.data)
    ctx = StageContext(cfg=cfg, records=data.records, classes=CLASSES, run_dir=run_dir, round=1)
    out = tmp_path / "predicted"
    summary = predict.run(ctx, run_dir / "round1" / "train", out)
    assert summary["images"] == len(STEMS) and summary["images_reset"] == 0
    for stem in STEMS:
        mask = load_mask(out / f"{stem}.png")
        probs, ids = load_probs(out / f"{stem}.npz")
        assert ids.tolist() == [0, LABELS[stem]] and mask.shape == (SIDE, SIDE)
        np.testing.assert_allclose(probs.sum(0), 1.0, atol=2 / 255)
        assert set(np.unique(mask).tolist()) <= {0, LABELS[stem], 255}
    assert predict.run(ctx, run_dir / "round1" / "train", out)["images"] == 0  # a rerun finds every image done


def test_round_ensemble_averages_this_round_with_the_earlier_rounds_mean(tmp_path):
    run_dir, cfg = make_run(tmp_path)
    rng = np.random.default_rng(1)
    earlier = {}
    for stem in STEMS:  # hand-made mean of rounds 1..2: a random pattern no network would predict
        fg = rng.random((SIDE, SIDE)).astype(np.float32)
        save_probs(run_dir / "round2" / "predict" / f"{stem}.npz", np.stack([1 - fg, fg]), [0, LABELS[stem]])
        earlier[stem] = load_probs(run_dir / "round2" / "predict" / f"{stem}.npz")[0]  # as stored (uint8 steps)
    data = load_weak_dataset(cfg.data)
    outputs = {}
    for ensemble, round_ in ((False, 3), (True, 3), (True, 1)):
        rounds = dataclasses.replace(cfg.rounds, ensemble=ensemble)
        test_time = dataclasses.replace(cfg.test_time, flip=False)
        ctx = StageContext(cfg=dataclasses.replace(cfg, rounds=rounds, test_time=test_time), records=data.records,
                           classes=CLASSES, run_dir=run_dir, round=round_)
        out = tmp_path / f"pred_{ensemble}_{round_}"
        predict.run(ctx, run_dir / "round1" / "train", out)  # the same network each time
        outputs[ensemble, round_] = {stem: load_probs(out / f"{stem}.npz") for stem in STEMS}
    for stem in STEMS:
        alone, ids = outputs[False, 3][stem]
        mean, mean_ids = outputs[True, 3][stem]
        assert mean_ids.tolist() == ids.tolist() == [0, LABELS[stem]]
        assert np.abs(alone - earlier[stem]).max() > 0.3  # the two differ, so the mean is neither
        np.testing.assert_allclose(mean, (2 * earlier[stem] + alone) / 3, atol=1.5 / 255)  # 2/3 earlier + 1/3 now
        np.testing.assert_array_equal(outputs[True, 1][stem][0], alone)  # round 1: nothing earlier to average


def test_foreground_network_trains_two_outputs_and_names_the_label(tmp_path):
    run_dir, cfg = make_run(tmp_path)
    cfg = dataclasses.replace(cfg, rounds=dataclasses.replace(cfg.rounds, foreground_network=True))
    data = load_weak_dataset(cfg.data)
    dataset = PseudoLabelDataset(data.records, run_dir / "crf", None, cfg.data.max_pixels, num_classes=3,
                                 foreground_only=True)
    _, mask = dataset.load(STEMS.index("b"))  # label 2 ("bar") -> 1; ignore stays 255
    assert set(np.unique(mask).tolist()) == {0, 1, 255}
    ctx = StageContext(cfg=cfg, records=data.records, classes=CLASSES, run_dir=run_dir, round=1)
    train.run(ctx, run_dir / "crf", tmp_path / "train")
    state = torch.load(tmp_path / "train" / "model.pt", weights_only=True)
    assert state["head.classify.weight"].shape[0] == 2  # foreground vs background, not 3 classes
    predict.run(ctx, tmp_path / "train", tmp_path / "pred")
    for stem in STEMS:
        _, ids = load_probs(tmp_path / "pred" / f"{stem}.npz")
        assert ids.tolist() == [0, LABELS[stem]]
        assert set(np.unique(load_mask(tmp_path / "pred" / f"{stem}.png")).tolist()) <= {0, LABELS[stem]}


def test_foreground_iou_by_hand():
    mask = np.array([[0, 1, 1, 255]], np.uint8)  # foreground: pixels 1, 2
    reference = np.array([[1, 1, 0, 2]], np.uint8)  # foreground: pixels 0, 1, 3
    assert predict.foreground_iou(mask, reference) == 1 / 4  # intersection {1}, union {0, 1, 2, 3}
    assert predict.foreground_iou(np.zeros((2, 2), np.uint8), np.full((2, 2), 255, np.uint8)) == 1.0


@pytest.mark.parametrize("ensemble", [False, True])
def test_outlier_reset_restores_the_coarse_map_where_the_prediction_left_the_first_labels(tmp_path, ensemble):
    run_dir, cfg = make_run(tmp_path)
    cfg = dataclasses.replace(cfg, rounds=dataclasses.replace(cfg.rounds, reset_iou=0.5, ensemble=ensemble))
    earlier = np.full((SIDE, SIDE), 0.2, np.float32)  # round 1's stored map, averaged in with the ensemble
    rng = np.random.default_rng(0)
    shifts = {"a": 2, "b": 0, "c": 12, "d": 14}  # IoU of the prediction with the first labels: 0.78, 1, 0.14, 0.06
    records = {r.stem: r for r in load_weak_dataset(cfg.data).records}
    resets = 0
    for stem in STEMS:
        label = LABELS[stem]
        first = np.zeros((SIDE, SIDE), np.float32)
        first[4:20, 4:20] = 1
        save_mask(run_dir / "crf" / f"{stem}.png", np.where(first > 0, label, 0).astype(np.uint8))
        fg = rng.random((SIDE, SIDE)).astype(np.float32)  # any coarse map
        coarse = np.where(fg > 0.6, label, np.where(fg < 0.3, 0, 255)).astype(np.uint8)
        save_probs(run_dir / "coarse" / f"{stem}.npz", np.stack([1 - fg, fg]), [0, label])
        save_mask(run_dir / "coarse" / f"{stem}.png", coarse)
        save_probs(run_dir / "round1" / "predict" / f"{stem}.npz", np.stack([1 - earlier, earlier]), [0, label])
        moved = np.roll(first, shifts[stem], axis=1)  # what the network predicts: the first labels, shifted
        probs = np.zeros((len(CLASSES), SIDE, SIDE), np.float32)
        probs[0], probs[label] = 1 - moved, moved
        labels, reset = predict.image_labels(probs, records[stem], cfg, 2, run_dir)
        resets += reset
        assert reset == (shifts[stem] > 10)  # decided on the round's own map, with the ensemble too
        own, own_mask = (fg, coarse) if reset else (moved, np.where(moved > 0, label, 0))
        if ensemble:  # the mean of round 1's map and the round's own (the coarse map where reset)
            np.testing.assert_allclose(labels.soft[1], (earlier + own) / 2, atol=1.5 / 255)
            np.testing.assert_array_equal(labels.mask, np.where(labels.soft[1] > labels.soft[0], label, 0))
        else:
            np.testing.assert_allclose(labels.soft[1], own, atol=1 / 255)
            np.testing.assert_array_equal(labels.mask, own_mask)
    assert resets == 2
