"""ISNet on overlapping tiles, as extra candidate objects for label steering (an experiment; no config key uses it).

    .venv/bin/python benchmarks/salient_tiles.py --config configs/coco_mval_isnet.yaml \
        --salient runs/coco_mval_isnet/coarse/_parts/isnet --out runs/salient_tiles --half tune
    .venv/bin/python benchmarks/salient_steering.py --config configs/coco_mval_isnet.yaml \
        --salient runs/salient_tiles/max --evidence cam=runs/coco_mval_isnet/coarse/_parts/cam

Small labelled instances are often not among the objects ISNet draws on the whole photo. This runs ISNet on a 2 x 2
grid of overlapping tiles (each `--share` of the photo's height and width, input `--size`), stitches the tiles'
maps by their maximum, and writes two folders of soft maps in the coarse stage's format: `tiles/` (the stitched
map) and `max/` (its maximum with the whole-photo map of `--salient`). benchmarks/salient_steering.py then scores
steering on them, with the ceilings of the best salient objects. Only the photos of the chosen half are mapped
(halves as in benchmarks/split_scores.py); finished photos are skipped, so a stopped run continues.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_config  # noqa: E402
from pipeline.data.weak import load_weak_dataset  # noqa: E402
from pipeline.io import load_probs, read_image, save_mask, save_probs  # noqa: E402
from pipeline.models.isnet import load_isnet_onnx, predict_saliency_batch  # noqa: E402
from pipeline.models.weights import isnet_path  # noqa: E402
from split_scores import halves  # noqa: E402


def tile_map(model: torch.nn.Module, image: np.ndarray, share: float, size: int) -> np.ndarray:
    """ISNet's maps of the 2 x 2 overlapping tiles (each `share` of the sides), stitched by their maximum [H, W]."""
    height, width = image.shape[:2]
    th, tw = round(share * height), round(share * width)
    corners = [(y, x) for y in (0, height - th) for x in (0, width - tw)]
    crops = [np.ascontiguousarray(image[y:y + th, x:x + tw]) for y, x in corners]
    stitched = np.zeros((height, width), np.float32)
    for (y, x), prob in zip(corners, predict_saliency_batch(model, crops, size=size, batch_size=1)):
        np.maximum(stitched[y:y + th, x:x + tw], prob, out=stitched[y:y + th, x:x + tw])
    return stitched


def write_map(folder: Path, stem: str, prob: np.ndarray) -> None:
    save_probs(folder / f"{stem}.npz", np.stack([1.0 - prob, prob]), [0, 1])
    save_mask(folder / f"{stem}.png", (prob >= 0.5).astype(np.uint8))  # written last: the photo is done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="config naming the data set")
    parser.add_argument("--salient", required=True, type=Path, help="folder of whole-photo ISNet maps (<stem>.npz)")
    parser.add_argument("--out", required=True, type=Path, help="output folder (tiles/ and max/ under it)")
    parser.add_argument("--half", choices=("tune", "report", "all"), default="tune")
    parser.add_argument("--share", type=float, default=0.6, help="tile side as a share of the photo's side")
    parser.add_argument("--size", type=int, default=512, help="ISNet input side for a tile")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    records = list(load_weak_dataset(load_config(args.config).data).records)
    tune, report = halves([r.stem for r in records])
    chosen = {"tune": tune, "report": report, "all": tune | report}[args.half]
    records = [r for r in records if r.stem in chosen]
    model = load_isnet_onnx(isnet_path()).eval()
    folders = {name: args.out / name for name in ("tiles", "max")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    start, done = time.perf_counter(), 0
    for record in records:
        if (folders["max"] / f"{record.stem}.png").is_file():
            continue
        tiles = tile_map(model, read_image(record.image), args.share, args.size)
        whole = load_probs(args.salient / f"{record.stem}.npz")[0][1]
        write_map(folders["tiles"], record.stem, tiles)
        write_map(folders["max"], record.stem, np.maximum(whole, tiles))
        done += 1
    seconds = time.perf_counter() - start
    print(f"{done} photos mapped in {seconds:.0f} s ({seconds / max(done, 1):.2f} s per photo), "
          f"{len(records) - done} already there; maps in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
