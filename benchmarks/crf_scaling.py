"""The `crf` stage's images/s serial vs on Ray (parallel efficiency), its peak memory vs N, and its tasks per node.

    python benchmarks/crf_scaling.py speed --images 200 --cpus 2        # serial vs Ray, efficiency
    python benchmarks/crf_scaling.py memory --images 200 2000 --cpus 2  # peak RSS (driver, workers) per size
    python benchmarks/crf_scaling.py multinode --images 12              # 2 nodes x 1 CPU (ray.cluster_utils)
    python benchmarks/crf_scaling.py multinode --address 127.0.0.1:6390 # a cluster made with `ray start`
    python benchmarks/crf_scaling.py multinode --images 24 --kill-node-after 8   # lose a node mid-run: retried

Data: real-size photos (scikit-image's bundled chelsea, astronaut, coffee, ... cropped/resized to 500x375, flipped)
with a centre-Gaussian coarse soft map per image; stems are distinct files, image files are shared between stems
(like several COCO-MVal files sharing one photo). Nothing is downloaded. Peak memory is sampled every 0.1 s from
/proc (RSS of this process and of this benchmark's own Ray processes).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import MIB, PeakSampler, arguments, descendants, named, processes
from pipeline.config import Config, RayConfig
from pipeline.io import save_image, save_probs
from pipeline.orchestration.parallel import ray_session
from pipeline.stage import Record, StageContext
from stages import crf as crf_stage

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "cat", "immunohistochemistry", "motorcycle_left", "retina")


def make_dataset(root: Path, n: int, h: int = 375, w: int = 500, distinct: int = 40) -> list[Record]:
    """`distinct` real-size images and n per-stem coarse soft maps (centre Gaussian prior, K = 2) under root."""
    from skimage import data as skdata

    rng = np.random.default_rng(0)
    photos = []
    for name in PHOTOS:
        try:
            photo = getattr(skdata, name)()
        except Exception:  # a few bundled images need an optional download: skip those
            continue
        if photo.ndim == 2:
            photo = np.stack([photo] * 3, -1)
        photos.append(np.asarray(photo[..., :3], np.uint8))
    paths = []
    for i in range(distinct):
        photo = photos[i % len(photos)]
        ph, pw = photo.shape[:2]
        s = rng.uniform(0.7, 1.0)
        ch, cw = int(ph * s), int(pw * s)
        y, x = rng.integers(0, ph - ch + 1), rng.integers(0, pw - cw + 1)
        crop = Image.fromarray(photo[y:y + ch, x:x + cw]).resize((w, h), Image.Resampling.BILINEAR)
        arr = np.asarray(crop)[:, ::-1] if i % 2 else np.asarray(crop)
        paths.append(root / "images" / f"p{i:03d}.jpg")
        save_image(paths[-1], np.ascontiguousarray(arr), fmt="JPEG", quality=90)
    yy, xx = np.mgrid[:h, :w]
    p_fg = np.exp(-(((xx - w / 2) / (0.3 * w)) ** 2 + ((yy - h / 2) / (0.3 * h)) ** 2) / 2).astype(np.float32)
    save_probs(root / "src" / "template.npz", np.stack([1 - p_fg, p_fg]), [0, 1])
    blob = (root / "src" / "template.npz").read_bytes()
    records = []
    for i in range(n):
        stem = f"im{i:05d}"
        (root / "src" / f"{stem}.npz").write_bytes(blob)
        records.append(Record(stem=stem, image=paths[i % distinct], label=1))
    return records


def memory_sample(temp_dir: str) -> dict[str, float]:
    """RSS of this process, and the summed and the largest RSS of this benchmark's Ray processes: those naming
    `temp_dir` on their command line (raylet, GCS, ...) and all below them (`ray::` workers)."""
    table = processes()
    ray = [table[pid].rss for pid in descendants(table, named(table, temp_dir)) if pid != os.getpid()]
    return {"driver": table[os.getpid()].rss, "ray_total": sum(ray), "ray_max": max(ray, default=0)}


def ray_cpu_seconds(temp_dir: str) -> dict[int, float]:
    """CPU seconds so far of each of this benchmark's Ray processes (as in `memory_sample`)."""
    table = processes()
    return {pid: table[pid].cpu_seconds for pid in descendants(table, named(table, temp_dir)) if pid != os.getpid()}


def run_stage(records: list[Record], root: Path, ray_cfg: RayConfig, out: str) -> tuple[float, dict]:
    cfg = Config(ray=ray_cfg)
    ctx = StageContext(cfg=cfg, records=tuple(records), classes=("background", "object"), run_dir=root)
    shutil.rmtree(root / out, ignore_errors=True)
    start = time.perf_counter()
    summary = crf_stage.run(ctx, root / "src", root / out)
    return time.perf_counter() - start, summary


def speed(args: argparse.Namespace, root: Path) -> None:
    records = make_dataset(root, args.images)
    cpu0 = time.process_time()
    serial_s, _ = run_stage(records, root, RayConfig(enabled=False), "serial")
    serial_cpu = time.process_time() - cpu0
    ray_cfg = RayConfig(num_cpus=args.cpus, temp_dir=args.ray_temp)
    with ray_session(ray_cfg):
        run_stage(records[: 2 * args.cpus], root, ray_cfg, "warmup")  # start the workers once (not timed)
        before, cpu0 = ray_cpu_seconds(args.ray_temp), time.process_time()
        ray_s, summary = run_stage(records, root, ray_cfg, "ray")
        after, driver_cpu = ray_cpu_seconds(args.ray_temp), time.process_time() - cpu0
    ray_cpu = sum(after.values()) - sum(c for pid, c in before.items() if pid in after)
    for stem in (r.stem for r in records[:: max(1, len(records) // 20)]):
        for suffix in (".png", ".npz"):
            if (root / "serial" / f"{stem}{suffix}").read_bytes() != (root / "ray" / f"{stem}{suffix}").read_bytes():
                raise SystemExit(f"serial and Ray outputs differ for {stem}{suffix}")
    serial_rate, ray_rate = len(records) / serial_s, len(records) / ray_s
    print(f"images: {len(records)} of 500x375, CRF defaults, tasks per node {summary['tasks_per_node']}")
    print(f"serial: {serial_s:.1f} s = {serial_rate:.2f} images/s")
    print(f"ray ({args.cpus} CPUs): {ray_s:.1f} s = {ray_rate:.2f} images/s")
    print(f"speed-up {ray_rate / serial_rate:.2f}x, parallel efficiency {ray_rate / serial_rate / args.cpus:.2f}")
    print(f"CPU seconds per image: serial {serial_cpu / len(records):.3f}, Ray workers+raylet "
          f"{ray_cpu / len(records):.3f} + driver {driver_cpu / len(records):.3f} -> CPU-cost efficiency "
          f"{serial_cpu / (ray_cpu + driver_cpu):.2f} (what wall-clock efficiency becomes on otherwise idle cores)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other users share them)")


def memory(args: argparse.Namespace, root: Path) -> None:
    ray_cfg = RayConfig(num_cpus=args.cpus, temp_dir=args.ray_temp)
    with ray_session(ray_cfg):
        for n in args.images_list:
            shutil.rmtree(root, ignore_errors=True)
            records = make_dataset(root, n)
            with PeakSampler(lambda: memory_sample(args.ray_temp), every_s=0.1) as sampler:
                seconds, summary = run_stage(records, root, ray_cfg, "ray")
            peak = {key: value / MIB for key, value in sampler.peaks.items()}
            print(f"{n:6d} images: {seconds:7.1f} s ({n / seconds:.2f}/s), peak RSS: driver {peak['driver']:.0f} MiB, "
                  f"Ray processes together {peak['ray_total']:.0f} MiB, largest {peak['ray_max']:.0f} MiB")


def _remove_node_after(cluster: object, node: object, out: Path, images: int) -> None:
    """Kill the joined node (its raylet and workers) once `images` outputs exist: tasks it held must be retried."""
    while len(list(out.glob("im*.png"))) < images:
        time.sleep(0.05)
    cluster.remove_node(node)
    print(f"removed node {node.node_id[:12]} after {images} images", flush=True)


def multinode(args: argparse.Namespace, root: Path) -> None:
    """The stage on a cluster of several nodes: `--address` of one started with `ray start`, else a head + one joined
    node (1 CPU each) from ray.cluster_utils. Prints the node ids and how many tasks each ran."""
    import ray

    cluster = None
    if not args.address:
        from ray.cluster_utils import Cluster

        os.environ["RAY_TMPDIR"] = args.ray_temp  # session files (and the cluster address file) stay out of /tmp/ray
        os.makedirs(os.path.join(args.ray_temp, "ray"), exist_ok=True)
        cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, include_dashboard=False))
        joined = cluster.add_node(num_cpus=1)
    address = args.address or cluster.address
    try:
        ray_cfg = RayConfig(address=address)
        with ray_session(ray_cfg):  # joins the cluster (never starts one when an address is given)
            nodes = sorted(n["NodeID"][:12] for n in ray.nodes() if n["Alive"])
            print(f"cluster {address}: nodes {nodes}")
            size = (375, 500) if args.kill_node_after else (120, 160)  # slower tasks, so the kill lands mid-run
            records = make_dataset(root, args.images, h=size[0], w=size[1], distinct=4)
            if args.kill_node_after and cluster is not None:
                threading.Thread(target=_remove_node_after, daemon=True,
                                 args=(cluster, joined, root / "ray", args.kill_node_after)).start()
            seconds, summary = run_stage(records, root, ray_cfg, "ray")
        finished = len(list((root / "ray").glob("im*.png")))
        print(f"{summary['images']} images in {seconds:.1f} s; tasks per node: {summary['tasks_per_node']}")
        print(f"nodes used: {len(summary['tasks_per_node'])} of {len(nodes)}; finished files {finished}/{len(records)}")
    finally:
        if cluster is not None:
            cluster.shutdown()


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("mode", choices=("speed", "memory", "multinode"))
    parser.add_argument("--images", type=int, nargs="+", default=[200], help="images (memory: several sizes)")
    parser.add_argument("--cpus", type=int, default=2, help="Ray CPUs for speed/memory (this machine's)")
    parser.add_argument("--workdir", default="", help="where to write the data ('' = a temp folder, removed)")
    parser.add_argument("--address", default="", help="multinode: join this cluster ('' = build a 2-node one)")
    parser.add_argument("--kill-node-after", type=int, default=0,
                        help="multinode: kill the joined node once this many images are done (0 = never)")
    parser.add_argument("--ray-temp", default="/tmp/c2f-crf-bench-ray", help="Ray session files (own: other clusters' "
                        "processes are not counted)")
    args = parser.parse_args()
    args.images_list = args.images
    args.images = args.images[0]
    root = Path(args.workdir or tempfile.mkdtemp(prefix="crf-bench-"))
    try:
        if args.mode == "speed":
            speed(args, root)
        elif args.mode == "memory":
            memory(args, root)
        else:
            multinode(args, root)
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
