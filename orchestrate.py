"""coarse2fine command line (also installed as the `coarse2fine` console script).

    coarse2fine run --config configs/demo.yaml                  # weak pipeline: coarse -> crf -> rounds, scored
    coarse2fine run --config configs/demo.yaml --from round2    # redo round 2 onwards
    coarse2fine run --config configs/grabcut.yaml --address auto --set rounds.count=3
    coarse2fine evaluate --config configs/grabcut.yaml --pred runs/grabcut/crf   # score any folder of masks
    coarse2fine full --config configs/full_camvid.yaml          # fully supervised training + evaluation
    coarse2fine flops                                           # GMACs / parameters of every variant

Every command that takes `--config` also takes `--set key=value` (repeatable) overrides. Errors in configs or data
exit with status 2 and one line naming the key or file.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _config(args: argparse.Namespace):
    from pipeline.config import load_config

    overrides = list(args.set or [])
    if getattr(args, "address", None):
        overrides.append(f"ray.address={args.address}")
    return load_config(args.config, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.runner import run_pipeline

    run_pipeline(_config(args), start_from=args.start_from)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import dataclasses

    from pipeline.parallel import ray_session
    from pipeline.runner import format_table
    from pipeline.stage import StageContext
    from pipeline.weak_data import load_weak_dataset
    from stages import evaluate

    cfg = _config(args)
    cfg = dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, enabled=cfg.ray.enabled and not args.serial))
    dataset = load_weak_dataset(cfg.data)
    ctx = StageContext(cfg=cfg, records=dataset.records, classes=dataset.classes, run_dir=Path(args.pred))
    with ray_session(cfg.ray):
        scores = evaluate.run(ctx, Path(args.pred), Path(args.out or args.pred))  # writes scores.json there
    print(format_table([{"name": Path(args.pred).name, **scores}]))
    for name, iou in scores["per_class_iou"].items():
        print(f"  {name:<24} {'-' if iou is None else f'{iou:.4f}'}")
    return 0


def cmd_full(args: argparse.Namespace) -> int:
    from stages import full

    summary = full.run(_config(args))
    print(f"val mIoU {summary['miou']:.4f}  pixel acc {summary['pixel_acc']:.4f}")
    return 0


def cmd_flops(args: argparse.Namespace) -> int:
    from pipeline.models.flops import main

    return main(args.rest) or 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coarse2fine", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", required=True, help="YAML config (see configs/base.yaml for every key)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. train.lr=1e-3")
        return p

    p = with_config(sub.add_parser("run", help="run or resume the weak-supervision pipeline"))
    p.add_argument("--from", dest="start_from", metavar="STAGE", help="redo from this stage: coarse, crf, roundK, ...")
    p.add_argument("--address", help="join this Ray cluster ('auto' = the one `ray start` made here)")
    p.set_defaults(func=cmd_run)

    p = with_config(sub.add_parser("evaluate", help="score a folder of <stem>.npz / <stem>.png predictions"))
    p.add_argument("--pred", required=True, help="folder of predictions named like the data set's images")
    p.add_argument("--out", help="write scores.json here (default: into --pred)")
    p.add_argument("--serial", action="store_true", help="score in this process, without Ray")
    p.set_defaults(func=cmd_evaluate)

    p = with_config(sub.add_parser("full", help="fully supervised training and evaluation"))
    p.add_argument("--address", help="join this Ray cluster (Ray Train workers)")
    p.set_defaults(func=cmd_full)

    p = sub.add_parser("flops", help="GMACs and parameters per variant at 1x3x1024x2048", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_flops)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local clusters need no token (Ray >= 2.5x)
    args = build_parser().parse_args(argv)
    from pipeline.config import ConfigError
    from pipeline.io import ImageError
    from pipeline.weak_data import DatasetError

    try:
        return args.func(args)
    except (ConfigError, DatasetError, ImageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
