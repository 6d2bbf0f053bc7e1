"""Memory, images/s and disk per image of coarse -> crf -> 1 round -> crf as N grows: prints the ratios to the first N.

    .venv/bin/python benchmarks/scale.py                                     # N = 1,000 and 10,000 at 120 x 160
    .venv/bin/python benchmarks/scale.py --sizes 1000 10000 --shape 480 640 --json runs/scale.json
    .venv/bin/python benchmarks/scale.py --sizes 300 --address 127.0.0.1:6379   # join a running cluster

For each N: N demo images at one fixed size (`pipeline.data.demo.generate`, made in parallel chunks and cached under
--root), class-agnostic, so DDT forms ONE group of all N images (the memory worst case). Then `coarse2fine run`
runs as a subprocess: coarse (DDT) -> crf -> round 1 (--iterations training steps) -> predict -> crf. Every 0.5 s
this script samples
  - the summed RSS of the driver and all its descendants (a local Ray cluster: GCS, raylet, every worker); with
    --address also every process under that cluster's --temp-dir (its raylets and their workers);
  - the driver's own peak RSS (VmHWM);
  - per stage, the RSS of the largest Ray worker process (a task or actor: in `coarse`, DDT's statistics of the
    one label group and its projection pass);
  - the growth of /dev/shm's used bytes since the start: the pages Ray's object store (plasma) has touched, an upper
    bound of its peak use (the store lives in an unlinked /dev/shm file).
It prints, per N: images/s of every stage (from its manifest's seconds; training is per step, not per image), the
peaks, and bytes on disk per image per stage; then the ratios of the last N to the first, against issue 29's targets
(peak memory <= 1.2x, per-image throughput >= 0.9x, driver memory flat). `--json PATH` writes the same figures.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from common import MIB, REPO, arguments, descendants, named, peak_rss, processes, run_sampled
from pipeline.data.demo import generate
from pipeline.io import load_mask, save_mask

PER_IMAGE = ("coarse", "crf", "round1/predict", "round1/crf")  # stages that visit every image once
STAGES = ("coarse", "crf", "round1/train", "round1/predict", "round1/crf")


def _chunk(args: tuple[Path, int, int, tuple[int, int]]) -> None:
    folder, count, seed, shape = args
    generate(folder, count, seed, shape)


def make_images(folder: Path, n: int, shape: tuple[int, int], workers: int) -> Path:
    """N images of `shape` in `folder` (cached: `.complete`), masks made binary (0 / 255) for class-agnostic scoring.
    Chunks of 500 are generated in parallel, each from its own seed, and merged under chunk-prefixed names."""
    if (folder / ".complete").is_file():
        return folder
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    chunks = [(tmp / f"chunk{k}", min(500, n - start), k, shape) for k, start in enumerate(range(0, n, 500))]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_chunk, chunks))
    (tmp / "images").mkdir()
    (tmp / "masks").mkdir()
    for k, (chunk, *_rest) in enumerate(chunks):
        for image in sorted((chunk / "images").iterdir()):
            image.rename(tmp / "images" / f"c{k:03d}_{image.name}")
            mask = chunk / "masks" / image.name
            save_mask(tmp / "masks" / f"c{k:03d}_{image.name}", (load_mask(mask) > 0).astype(np.uint8) * 255)
        shutil.rmtree(chunk)
    (tmp / ".complete").write_text(f"n={n} shape={shape}\n")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def write_config(path: Path, data: Path, runs: Path, name: str, shape: tuple[int, int], iterations: int) -> None:
    side = min(448, max(shape))  # the CNN sees images at their own size, up to base.yaml's 448
    path.write_text(f"""base: {REPO / 'configs' / 'base.yaml'}
run: {{name: {name}, root: {runs}}}
data: {{kind: folder, root: {data}, labels: '', classes: '', class_agnostic: true, gt_foreground_value: 255,
       gt_ignore_values: []}}
coarse: {{method: ddt, ddt_groups: label, image_side: {side}}}
train: {{iterations: {iterations}, checkpoint_every: {iterations}, log_every: {max(iterations // 4, 1)}}}
rounds: {{count: 1}}
""")


def _shm_used() -> int:
    """Bytes used in /dev/shm, where Ray's object store keeps its (unlinked) file."""
    st = os.statvfs("/dev/shm")
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _running_stage(run_dir: Path) -> str:
    """The stage `run_dir` is in: the one whose manifest.json exists without its DONE ("" before the first)."""
    for stage in STAGES:
        if (run_dir / stage / "manifest.json").is_file() and not (run_dir / stage / "DONE").is_file():
            return stage
    return ""


def measured_run(cmd: list[str], cluster_temp: str, run_dir: Path) -> dict:
    """Run `cmd`; its seconds and peaks: RSS of the whole tree (+ the cluster's processes), driver, /dev/shm growth,
    and per stage of `run_dir` the largest Ray worker (a "ray::..." command line: the task or actor holding the most
    memory at that moment, e.g. DDT's statistics task of one label group)."""
    shm0 = _shm_used()

    def sample(pid: int) -> dict[str, float]:
        table = processes()
        tree = descendants(table, [pid, *(named(table, cluster_temp) if cluster_temp else ())])
        figures = {"all": sum(table[p].rss for p in tree), "driver": peak_rss(pid), "shm": _shm_used() - shm0}
        stage = _running_stage(run_dir)
        if stage:
            figures[f"task {stage}"] = max([table[p].rss for p in tree if table[p].cmdline.startswith(b"ray::")],
                                           default=0)
        return figures

    seconds, peaks, code = run_sampled(cmd, sample, every_s=0.5)
    if code:
        raise SystemExit(f"{' '.join(cmd)} exited with {code}")
    tasks = {key.removeprefix("task "): value for key, value in peaks.items() if key.startswith("task ")}
    return {"seconds": seconds, "all": peaks.get("all", 0), "driver": peaks.get("driver", 0),
            "shm": peaks.get("shm", 0), "task": tasks}


def stage_figures(run_dir: Path, n: int) -> tuple[dict, dict, dict]:
    """Per stage: images/s (steps/s for training), bytes on disk per image, and the score of its scored output."""
    rate, disk, score = {}, {}, {}
    for manifest in sorted(run_dir.rglob("manifest.json")):
        stage = manifest.parent.relative_to(run_dir).as_posix()
        summary = json.loads(manifest.read_text()).get("summary", {})
        seconds = max(summary.get("seconds", 0.0), 1e-9)
        rate[stage] = round((n if stage in PER_IMAGE else summary.get("iterations", 0)) / seconds, 3)
        disk[stage] = round(sum(p.stat().st_size for p in manifest.parent.rglob("*") if p.is_file()) / n)
        scores = manifest.parent / "scores.json"
        if scores.is_file():
            score[stage] = json.loads(scores.read_text()).get("fg_jaccard")
    return rate, disk, score


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="values of N, in order")
    parser.add_argument("--shape", type=int, nargs=2, default=[120, 160], metavar=("H", "W"),
                        help="image size (small, so that N = 10,000 runs on a 2-core machine)")
    parser.add_argument("--iterations", type=int, default=20, help="round 1's training steps (a token round)")
    parser.add_argument("--root", default="runs/scale", help="images, configs and runs go here")
    parser.add_argument("--address", default="", help="join this Ray cluster ('' = start a local one)")
    parser.add_argument("--cluster-temp", default="", help="that cluster's `ray start --temp-dir` (its processes' "
                        "memory is then counted too; '' = none)")
    parser.add_argument("--set", action="append", default=[], help="extra config override, e.g. ray.actors=2")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the run folders (else removed after measuring)")
    args = parser.parse_args()

    root = (REPO / args.root).resolve()
    shape = tuple(args.shape)
    runs = []
    for n in args.sizes:
        t0 = time.time()
        data = make_images(root / f"data_{n}_{shape[0]}x{shape[1]}", n, shape, os.cpu_count() or 1)
        print(f"N={n}: images ready in {time.time() - t0:.0f} s", flush=True)
        name = f"run_{n}_{shape[0]}x{shape[1]}"
        shutil.rmtree(root / name, ignore_errors=True)
        config = root / f"{name}.yaml"
        write_config(config, data, root, name, shape, args.iterations)
        cmd = [sys.executable, "orchestrate.py", "run", "--config", str(config)]
        cmd += [a for s in args.set for a in ("--set", s)] + (["--address", args.address] if args.address else [])
        peaks = measured_run(cmd, args.cluster_temp, root / name)
        rate, disk, score = stage_figures(root / name, n)
        runs.append({"n": n, "shape": list(shape), "seconds": round(peaks["seconds"], 1),
                     "peak_rss_all_mib": round(peaks["all"] / MIB, 1),
                     "driver_rss_mib": round(peaks["driver"] / MIB, 1),
                     "object_store_peak_mib": round(peaks["shm"] / MIB, 1),
                     "largest_task_rss_mib": {k: round(v / MIB, 1) for k, v in peaks["task"].items()},
                     "images_per_s": rate, "disk_bytes_per_image": disk, "fg_jaccard": score})
        if not args.keep:
            shutil.rmtree(root / name, ignore_errors=True)
        print(json.dumps(runs[-1]), flush=True)
    report(runs)
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs}, indent=1) + "\n")


def report(runs: list[dict]) -> None:
    stages = list(runs[0]["images_per_s"])
    print(f"\n{'N':>7}{'total s':>9}{'all RSS MiB':>13}{'driver MiB':>12}{'store MiB':>11}  "
          + "  ".join(f"{s} /s" for s in stages))
    for r in runs:
        print(f"{r['n']:>7}{r['seconds']:>9.0f}{r['peak_rss_all_mib']:>13.0f}{r['driver_rss_mib']:>12.0f}"
              f"{r['object_store_peak_mib']:>11.0f}  "
              + "  ".join(f"{r['images_per_s'][s]:>{len(s) + 3}.2f}" for s in stages))
    for r in runs:
        print(f"N={r['n']}: largest Ray worker per stage (MiB): "
              + ", ".join(f"{s} {v:.0f}" for s, v in r["largest_task_rss_mib"].items()))
    print("disk bytes per image: " + ", ".join(f"{s} {v}" for s, v in runs[-1]["disk_bytes_per_image"].items()))
    last = runs[-1]
    coarse_task = last["largest_task_rss_mib"].get("coarse", 0.0)
    print(f"driver + coarse (DDT) task at N={last['n']}: {last['driver_rss_mib'] + coarse_task:.0f} MiB "
          "(target <= 2048)")
    if len(runs) < 2:
        return
    first = runs[0]
    print(f"\nN={last['n']} vs N={first['n']} (targets: memory <= 1.2, per-image throughput >= 0.9):")
    print(f"  peak RSS of all processes {last['peak_rss_all_mib'] / first['peak_rss_all_mib']:.3f}, driver "
          f"{last['driver_rss_mib'] / first['driver_rss_mib']:.3f}, object store "
          f"{last['object_store_peak_mib'] / max(first['object_store_peak_mib'], 1e-9):.3f}")
    print(f"  driver growth {(last['driver_rss_mib'] - first['driver_rss_mib']) * 1024 / (last['n'] - first['n']):.2f}"
          " KiB per image")
    print("  throughput " + ", ".join(f"{s} {last['images_per_s'][s] / first['images_per_s'][s]:.3f}"
                                      for s in PER_IMAGE if s in first["images_per_s"]))


if __name__ == "__main__":
    main()
