"""How the `crf` stage scales: images/s serial vs Ray, parallel efficiency, peak memory vs data-set size, and a
two-node cluster run showing tasks landing on both nodes.

    python benchmarks/crf_scaling.py speed --images 200 --cpus 2        # serial vs Ray, efficiency
    python benchmarks/crf_scaling.py memory --images 200 2000 --cpus 2  # peak RSS (driver, workers) per size
    python benchmarks/crf_scaling.py multinode --images 12              # 2 nodes x 1 CPU (ray.cluster_utils)

Data: real-size photos (scikit-image's bundled chelsea, astronaut, coffee, ... cropped/resized to 500x375, flipped)
with a centre-Gaussian coarse soft map per image; stems are distinct files, image files are shared between stems
(like several COCO-MVal files sharing one photo). Nothing is downloaded. Peak memory is sampled every 0.1 s from
/proc (RSS of this process and of every `ray::` worker process).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from pipeline.config import Config, RayConfig  # noqa: E402
from pipeline.io import save_image, save_probs  # noqa: E402
from pipeline.parallel import ray_session  # noqa: E402
from pipeline.stage import Record, StageContext  # noqa: E402
from stages import crf as crf_stage  # noqa: E402

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


class PeakMemory:
    """Samples RSS of this process and of Ray worker processes (`ray::...`) in a background thread."""

    def __init__(self, every_s: float = 0.1):
        self.every_s, self.driver, self.workers, self.worker_max = every_s, 0, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _rss(pid: str) -> int:
        try:
            with open(f"/proc/{pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            return 0

    def _loop(self) -> None:
        me = str(os.getpid())
        while not self._stop.is_set():
            total = 0
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        cmd = f.read(64)
                except OSError:
                    continue
                if cmd.startswith(b"ray::") and pid != me:
                    rss = self._rss(pid)
                    total += rss
                    self.worker_max = max(self.worker_max, rss)
            self.workers = max(self.workers, total)
            self.driver = max(self.driver, self._rss(me))
            self._stop.wait(self.every_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_stage(records: list[Record], root: Path, ray_cfg: RayConfig, out: str) -> tuple[float, dict]:
    cfg = Config(ray=ray_cfg)
    ctx = StageContext(cfg=cfg, records=tuple(records), classes=("background", "object"), run_dir=root)
    shutil.rmtree(root / out, ignore_errors=True)
    start = time.perf_counter()
    summary = crf_stage.run(ctx, root / "src", root / out)
    return time.perf_counter() - start, summary


def speed(args: argparse.Namespace, root: Path) -> None:
    records = make_dataset(root, args.images)
    serial_s, _ = run_stage(records, root, RayConfig(enabled=False), "serial")
    ray_cfg = RayConfig(num_cpus=args.cpus, temp_dir=args.ray_temp)
    with ray_session(ray_cfg):
        run_stage(records[: 2 * args.cpus], root, ray_cfg, "warmup")  # start the workers once (not timed)
        ray_s, summary = run_stage(records, root, ray_cfg, "ray")
    for stem in (r.stem for r in records[:: max(1, len(records) // 20)]):
        for suffix in (".png", ".npz"):
            if (root / "serial" / f"{stem}{suffix}").read_bytes() != (root / "ray" / f"{stem}{suffix}").read_bytes():
                raise SystemExit(f"serial and Ray outputs differ for {stem}{suffix}")
    serial_rate, ray_rate = len(records) / serial_s, len(records) / ray_s
    print(f"images: {len(records)} of 500x375, CRF defaults, tasks per node {summary['tasks_per_node']}")
    print(f"serial: {serial_s:.1f} s = {serial_rate:.2f} images/s")
    print(f"ray ({args.cpus} CPUs): {ray_s:.1f} s = {ray_rate:.2f} images/s")
    print(f"speed-up {ray_rate / serial_rate:.2f}x, parallel efficiency {ray_rate / serial_rate / args.cpus:.2f}")
    print(f"load average during run: {os.getloadavg()[0]:.1f} (other processes share these cores)")


def memory(args: argparse.Namespace, root: Path) -> None:
    ray_cfg = RayConfig(num_cpus=args.cpus, temp_dir=args.ray_temp)
    with ray_session(ray_cfg):
        for n in args.images_list:
            shutil.rmtree(root, ignore_errors=True)
            records = make_dataset(root, n)
            with PeakMemory() as peak:
                seconds, summary = run_stage(records, root, ray_cfg, "ray")
            print(f"{n:6d} images: {seconds:7.1f} s ({n / seconds:.2f}/s), peak RSS driver {peak.driver / 2**20:.0f} MiB,"
                  f" all workers {peak.workers / 2**20:.0f} MiB, largest worker {peak.worker_max / 2**20:.0f} MiB")


def multinode(args: argparse.Namespace, root: Path) -> None:
    """Head + one worker node (1 CPU each) in this machine; the stage's tasks must land on both."""
    import ray
    from ray.cluster_utils import Cluster

    os.environ["RAY_TMPDIR"] = args.ray_temp  # session files (and the cluster address file) stay out of /tmp/ray
    os.makedirs(os.path.join(args.ray_temp, "ray"), exist_ok=True)
    cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, include_dashboard=False))
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        nodes = sorted(n["NodeID"][:12] for n in ray.nodes() if n["Alive"])
        print(f"cluster {cluster.address}: nodes {nodes}")
        records = make_dataset(root, args.images, h=120, w=160, distinct=4)
        ray_cfg = RayConfig(address=cluster.address)
        seconds, summary = run_stage(records, root, ray_cfg, "ray")
        print(f"{summary['images']} images in {seconds:.1f} s; tasks per node: {summary['tasks_per_node']}")
        print(f"nodes used: {len(summary['tasks_per_node'])} of {len(nodes)}")
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("speed", "memory", "multinode"))
    parser.add_argument("--images", type=int, nargs="+", default=[200], help="images (memory: several sizes)")
    parser.add_argument("--cpus", type=int, default=2, help="Ray CPUs for speed/memory")  # this machine has 2
    parser.add_argument("--workdir", default="", help="where to write the data ('' = a temp folder, removed)")
    parser.add_argument("--ray-temp", default="/tmp/c2f-crf-bench-ray", help="Ray session files")
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
