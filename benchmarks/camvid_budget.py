"""CamVid val mIoU of the `lite` network trained for a fixed CPU time, SRM+CRM on or off: prints the run's summary.

    .venv/bin/python benchmarks/camvid_budget.py --root ../shared/data/camvid --variant on --minutes 20 --amp-cpu
    .venv/bin/python benchmarks/camvid_budget.py --root ../shared/data/camvid --variant off --minutes 20 --amp-cpu

Run one variant at a time on an otherwise idle machine (two at once share the cores and thrash). Setting
(configs/full_camvid.yaml with CPU overrides, the docs' CamVid reference protocol): images at `--input-scale` of
360x480, crops `--crop`, random scale 0.75-1.5, flip, batch `--batch`, AdamW lr `--lr` wd 1e-4, poly 0.9; trained on
the CPU without validation, then the last weights are evaluated on all 101 val images at the same input scale with
logits upsampled to 360x480, 11 ignored. --width, --no-aux, --frozen-stages, --lr, --backbone-lr-mult, --batch,
--jitter and --crop name the run where they depart from the protocol (e.g. `camvid_on_w64_noaux_b4_s0`). OHEM
keeps at least 50k of the protocol batch's 614k pixels (mmsegmentation's 100k of 2x512x1024), the same share for
other batches and crops. Results: docs/results.md (runs: docs/experiments.md).

The poly schedule needs its length up front, so the script first times `--probe` training steps of the variant
and sets iterations = budget / seconds-per-step (`--iterations N` skips the probe); the printed JSON gives the
iterations, the real training time and the val scores. The probe reads the machine's speed at that moment:
anything else running then (or later) changes the real training time, printed as train_seconds.

Test-time augmentation of a finished run (same options, which name the run, plus `--iterations`): `--eval-only`
loads its `full/model.pt` and scores the val split with `--eval-flip` and/or `--eval-scales` (relative to
`--input-scale`; mmsegmentation's aug_test), prints the scores and writes nothing. That is a different protocol from
the reference's single 240x320 pass, so it is reported beside it, never instead of it:

    .venv/bin/python benchmarks/camvid_budget.py --root ../shared/data/camvid --variant on --amp-cpu --channels-last \
        --ohem --width 64 --no-aux --iterations 1620 --eval-only --eval-flip --eval-scales 0.75 1 1.25 1.5
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from common import REPO, arguments, median_seconds, require
from pipeline.config import load_config
from pipeline.data.datasets import open_dataset
from pipeline.learn.engine import applies, build_optimizer
from pipeline.learn.losses import SegLoss
from stages.full import make_model, make_train_set, score
from stages.full import run as run_full

CONFIG = REPO / "configs" / "full_camvid.yaml"
CPU = torch.device("cpu")


def overrides(args: argparse.Namespace, iterations: int) -> list[str]:
    """The config overrides of this run; the run name carries every option that differs from the protocol."""
    on = args.variant == "on"
    suffix = ((f"_w{args.width}" if args.width else "") + ("_noaux" if args.no_aux else "")
              + (f"_frozen{args.frozen_stages}" if args.frozen_stages else "")
              + (f"_lr{args.lr:g}" if args.lr != 1e-3 else "")
              + (f"_blr{args.backbone_lr_mult:g}" if args.backbone_lr_mult != 1.0 else "")
              + (f"_b{args.batch}" if args.batch != 8 else "")
              + (f"_j{args.jitter:g}" if args.jitter != 0.2 else "")
              + (f"_c{args.crop[0]}x{args.crop[1]}" if tuple(args.crop) != (240, 320) else ""))  # only those given
    # OHEM keeps at least 50k pixels of a batch of 8 crops of 240x320 (8 %); other batches and crops keep that share
    ohem_min_kept = round(50_000 * args.batch * args.crop[0] * args.crop[1] / (8 * 240 * 320))
    name = f"camvid_{args.variant}{suffix}_s{args.seed}"
    return [f"full.root={args.root}", f"run.root={args.out}", f"run.name={name}",
            f"run.seed={args.seed}", f"model.srm={str(on).lower()}", f"model.crm={str(on).lower()}",
            f"full.input_scale={args.input_scale}", f"train.crop=[{args.crop[0]},{args.crop[1]}]",
            "train.scale_range=[0.75,1.5]", f"train.jitter={args.jitter}", f"train.batch_size={args.batch}",
            "train.optimizer=adamw", f"train.lr={args.lr}", "train.weight_decay=0.0001",
            f"train.backbone_lr_mult={args.backbone_lr_mult}",
            f"train.warmup_iters={max(1, iterations // 20)}", f"train.iterations={iterations}",
            f"train.checkpoint_every={max(1, iterations // 4)}", f"train.log_every={max(1, iterations // 20)}",
            "train.loader_workers=0", f"train.amp={'always' if args.amp_always else 'cuda'}",
            f"train.channels_last={'always' if args.channels_last else 'cuda'}", f"train.ohem={str(args.ohem).lower()}",
            f"train.ohem_min_kept={ohem_min_kept}",
            *([f"model.width={args.width}"] if args.width else []), *(["model.aux=false"] if args.no_aux else []),
            *([f"model.frozen_stages={args.frozen_stages}"] if args.frozen_stages else []),
            f"test_time.flip={str(args.eval_flip).lower()}",
            f"test_time.scales=[{','.join(str(x) for x in args.eval_scales)}]"]


def seconds_per_step(args: argparse.Namespace) -> float:
    """Time `args.probe` optimiser steps (after one warm-up step) of this variant on real training batches."""
    cfg = load_config(CONFIG, overrides=overrides(args, 100))
    model = make_model(cfg, 11).train()
    amp = applies(cfg.train.amp, CPU)  # as pipeline.learn.engine
    memory_format = torch.channels_last if applies(cfg.train.channels_last, CPU) else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    data = make_train_set(cfg, model.mean, model.std)
    opt = build_optimizer(model, cfg.train)
    loss_fn = SegLoss.from_config(cfg.train)  # as pipeline.learn.engine
    rng = np.random.default_rng(0)

    def step() -> None:
        batch = [data.get(int(i), rng) for i in rng.integers(0, len(data), args.batch)]
        x, y = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
        x = x.contiguous(memory_format=memory_format)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        loss_fn({k: v.float() for k, v in out.items()}, y).backward()
        opt.step()

    return median_seconds(step, args.probe, warmup=1)


def evaluate_finished_run(args: argparse.Namespace) -> None:
    """Score the run named by `args` (its full/model.pt) on the val split with the test-time options; print only."""
    if not args.iterations:
        raise SystemExit("--eval-only needs --iterations: the finished run's schedule length")
    cfg = load_config(CONFIG, overrides=overrides(args, args.iterations))
    weights = Path(cfg.run.root) / cfg.run.name / "full" / "model.pt"
    if not weights.is_file():
        raise SystemExit(f"{weights}: not found (train the run first, with the same options)")
    val = open_dataset(cfg.full, cfg.full.val_split)
    model = make_model(cfg, val.num_classes)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    start = time.time()
    scores = score(model.eval(), val, cfg, "cpu", test_time=True)
    print(json.dumps({"run": str(weights.parent.parent), "eval_scales": args.eval_scales, "eval_flip": args.eval_flip,
                      "miou": round(scores["miou"], 4), "pixel_acc": round(scores["pixel_acc"], 4),
                      "seconds": round(time.time() - start, 1)}))
    print("per-class IoU:", {k: round(v, 3) if v is not None else None for k, v in scores["per_class_iou"].items()})


def main() -> None:
    p = arguments(__doc__)
    p.add_argument("--root", required=True, help="CamVid folder (SegNet layout)")
    p.add_argument("--variant", choices=("on", "off"), required=True, help="SRM+CRM on, or both off")
    p.add_argument("--minutes", type=float, default=20.0, help="training time budget (the reference protocol's)")
    p.add_argument("--seed", type=int, default=0, help="run.seed")
    p.add_argument("--input-scale", type=float, default=0.6667, help="resize of the 360x480 images (the protocol's)")
    p.add_argument("--crop", type=int, nargs=2, default=(240, 320), help="training crop h w (the protocol's)")
    p.add_argument("--batch", type=int, default=8, help="images per step (the protocol's)")
    p.add_argument("--jitter", type=float, default=0.2,
                   help="train.jitter: photometric jitter strength (the reference protocol names none; 0 = off)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (2: the shared machine's cores)")
    p.add_argument("--probe", type=int, default=10, help="timed steps (after a warm-up) that size the schedule")
    p.add_argument("--iterations", type=int, default=0, help="train this many iterations (0 = as the probe says)")
    p.add_argument("--amp-cpu", action="store_true", dest="amp_always",
                   help="bf16 autocast on CPU too (train.amp=always)")
    p.add_argument("--channels-last", action="store_true", help="channels_last on CPU too (train.channels_last=always)")
    p.add_argument("--ohem", action="store_true", help="OHEM cross-entropy (train.ohem)")
    p.add_argument("--width", type=int, default=0, help="decoder width (model.width); 0 = the config's (96)")
    p.add_argument("--no-aux", action="store_true", help="no auxiliary head (model.aux=false)")
    p.add_argument("--frozen-stages", type=int, default=0, help="model.frozen_stages (stem + N encoder stages fixed)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (the reference protocol: 1e-3)")
    p.add_argument("--backbone-lr-mult", type=float, default=1.0,
                   help="train.backbone_lr_mult: the encoder's lr is --lr times this (the protocol: 1.0)")
    p.add_argument("--out", default="runs/bench", help="run.root (apart from the configs' runs/)")
    p.add_argument("--eval-only", action="store_true", help="score the finished run's model.pt; no training")
    p.add_argument("--eval-flip", action="store_true", help="with --eval-only: add flipped predictions")
    p.add_argument("--eval-scales", type=float, nargs="+", default=[1.0],
                   help="with --eval-only: test scales (1.0: the reference's single pass)")
    args = p.parse_args()
    require(Path(args.root), "--root: the CamVid folder")
    if not args.eval_only and (args.eval_flip or args.eval_scales != [1.0]):
        p.error("--eval-flip and --eval-scales go with --eval-only (training runs keep the anchor's single pass)")
    torch.set_num_threads(args.threads)
    if args.eval_only:
        evaluate_finished_run(args)
        return

    if args.iterations:
        sec, iterations = None, args.iterations  # no probe
    else:
        sec = seconds_per_step(args)
        iterations = max(1, int(args.minutes * 60 / sec))
        print(f"variant {args.variant}: {sec:.2f} s/step -> {iterations} iterations in {args.minutes} min", flush=True)
    cfg = load_config(CONFIG, overrides=overrides(args, iterations))
    start = time.time()
    summary = run_full(cfg, validate=False)  # the budget is training time: no validation, last weights scored
    summary.update(variant=args.variant, seconds_per_step_probe=None if sec is None else round(sec, 3),
                   total_seconds=round(time.time() - start), budget_minutes=args.minutes,
                   input_scale=args.input_scale, crop=list(args.crop), batch=args.batch,
                   amp=cfg.train.amp, channels_last=cfg.train.channels_last, ohem=args.ohem, width=cfg.model.width,
                   aux=cfg.model.aux, frozen_stages=cfg.model.frozen_stages, seed=args.seed,
                   backbone_lr_mult=cfg.train.backbone_lr_mult,
                   ohem_min_kept=cfg.train.ohem_min_kept, jitter=cfg.train.jitter)
    print(json.dumps({k: v for k, v in summary.items() if k != "per_class_iou"}, indent=1))
    print("per-class IoU:", {k: round(v, 3) if v is not None else None for k, v in summary["per_class_iou"].items()})


if __name__ == "__main__":
    main()
