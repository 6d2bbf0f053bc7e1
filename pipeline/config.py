"""Frozen dataclass configs loaded from YAML (detectron2-style, without the magic).

    cfg = load_config("configs/demo.yaml", overrides=["train.iterations=50", "rounds.count=1"])

Rules:
- a YAML file may name one `base:` file (path relative to itself); the child's keys are merged over it,
  section by section. Only one level: a base may not have a base of its own.
- `--set a.b=c` overrides are applied last; `c` is parsed as YAML (so `1`, `1e-3`, `true`, `[1,2]` work).
- unknown keys, wrong types and out-of-range numbers raise `ConfigError` naming the full key path.
- every key is documented by the comment on its field below and in `configs/base.yaml`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config_io import ConfigError, apply_override, build, read_with_base  # noqa: F401 (ConfigError and
# build are used from here by the CLI, the stages and the benchmarks)


def _range(lo: float | None = None, hi: float | None = None, **kw: Any) -> dict:
    return {"range": (lo, hi), **kw}


def _choices(*options: str) -> dict:
    return {"choices": options}


@dataclass(frozen=True)
class RunConfig:
    name: str = "demo"  # run directory is <root>/<name>/
    root: str = "runs"  # parent folder of all runs
    seed: int = field(default=0, metadata=_range(0))  # seeds numpy/torch/python in every stage


@dataclass(frozen=True)
class DataConfig:
    kind: str = field(default="folder", metadata=_choices("folder", "demo"))  # demo: generate the embedded set into root
    root: str = "data/demo"  # data set folder (relative paths are relative to the working directory)
    images: str = "images"  # subfolder of root holding the images
    labels: str = "labels.csv"  # CSV `image,label` (one label per image); "" = take labels from label_pattern
    label_pattern: str = ""  # regex on the file stem whose group 1 is the class name, e.g. "^(.*?)\\d\\d_" (COCO-MVal)
    classes: str = "classes.txt"  # one class name per line, background first; "" = background + sorted labels
    masks: str = "masks"  # optional ground-truth folder (same stems, .png), used only for scoring; "" = none
    gt_foreground_value: int = field(default=-1, metadata=_range(-1, 255))  # -1: GT holds class ids; else this value = the image's class
    gt_ignore_values: tuple[int, ...] = (255,)  # GT values that are not scored
    class_agnostic: bool = False  # one foreground class, labels ignored (GrabCut-style)
    max_pixels: int = field(default=40_000_000, metadata=_range(1))  # refuse larger images (memory guard)
    on_bad_image: str = field(default="error", metadata=_choices("error", "skip"))  # skip: list it in the run report
    demo_images: int = field(default=60, metadata=_range(6, 10_000))  # demo: number of training images
    demo_seed: int = field(default=0, metadata=_range(0))  # demo: generator seed (same seed, same pixels)


@dataclass(frozen=True)
class ModelConfig:
    # lite0: EfficientNet-Lite0 with offline ImageNet weights; resnet*: torchvision weights (downloaded when online)
    backbone: str = field(default="lite0", metadata=_choices("lite0", "resnet18", "resnet50", "resnet101"))
    pretrained: str = field(default="imagenet", metadata=_choices("imagenet", "none"))  # lite0 weights ship offline
    frozen_stages: int = field(default=0, metadata=_range(0, 4))  # stem + first N encoder stages fixed (0 = none)
    width: int = field(default=96, metadata=_range(8, 1024))  # decoder channels
    srm: bool = True  # Semantic Refinement Module at every decoder upsampling (false = bilinear)
    srm_mask: bool = True  # convex k x k combination of neighbouring offsets (false = raw offsets)
    srm_kernel: int = field(default=3, metadata=_range(1, 7))  # k of the k x k offset neighbourhood
    crm: bool = True  # Contextual Refinement Module over all four backbone stages
    aux: bool = True  # auxiliary head on the stride-16 features (training only)
    # stride-4 logits -> input size: bilinear, or convex (RAFT's learned upsampling, pipeline/models/upsample.py)
    upsample: str = field(default="bilinear", metadata=_choices("bilinear", "convex"))
    stride2: bool = False  # one more decoder level at stride 2 (width / 2 channels), the head on it: for 1-3 px classes


@dataclass(frozen=True)
class CoarseConfig:
    # saliency: weight-free superpixel saliency; ddt: co-localisation; cam: class activation maps; fusion: several
    method: str = field(default="saliency", metadata=_choices("saliency", "ddt", "cam", "fusion"))
    fusion: tuple[str, ...] = ("ddt", "saliency")  # methods whose maps `fusion` combines (geometric mean)
    image_side: int = field(default=448, metadata=_range(64, 4096))  # CNN input long side for ddt/cam
    ddt_groups: str = field(default="label", metadata=_choices("label", "image"))  # ddt: statistics per label group or per image
    fg_threshold: float = field(default=0.6, metadata=_range(0.0, 1.0))  # p >= this -> the image's class
    bg_threshold: float = field(default=0.3, metadata=_range(0.0, 1.0))  # p < this -> background; between -> ignore 255
    cam_epochs: int = field(default=10, metadata=_range(0, 1000))  # cam: head fine-tuning epochs; 0 = ImageNet top-1 CAM
    saliency_segments: int = field(default=200, metadata=_range(10, 5000))  # saliency: SLIC superpixels


@dataclass(frozen=True)
class CRFConfig:
    enabled: bool = True  # false = pass masks through unchanged
    iterations: int = field(default=10, metadata=_range(1, 100))  # mean-field iterations
    gauss_sxy: float = field(default=3.0, metadata=_range(0.1))  # smoothness kernel width (px)
    gauss_compat: float = field(default=3.0, metadata=_range(0.0))  # smoothness kernel weight
    bilateral_sxy: float = field(default=80.0, metadata=_range(0.1))  # appearance kernel width (px); 80: best on real data, benchmarks/crf_real.py
    bilateral_srgb: float = field(default=13.0, metadata=_range(0.1))  # appearance kernel colour width (0-255)
    bilateral_compat: float = field(default=10.0, metadata=_range(0.0))  # appearance kernel weight
    gt_prob: float = field(default=0.7, metadata=_range(0.5, 1.0))  # confidence of a hard label when no soft map
    min_class_prob: float = field(default=0.01, metadata=_range(0.0, 1.0))  # classes below this everywhere are left out
    ignore: str = field(default="keep", metadata=_choices("keep", "refine"))  # keep: 255 stays 255; refine: CRF decides
    confidence: float = field(default=0.0, metadata=_range(0.0, 1.0))  # refined pixels whose top prob < this -> 255
    max_side: int = field(default=1024, metadata=_range(64))  # larger images are refined downscaled, then upsampled


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = field(default=300, metadata=_range(1))  # optimiser steps per training run
    batch_size: int = field(default=8, metadata=_range(1))  # images per step (per worker)
    crop: tuple[int, int] = (192, 192)  # training crop (h, w); padded with fill 255 (mask) / mean (image)
    scale_range: tuple[float, float] = (0.5, 2.0)  # random rescale before cropping
    flip: bool = True  # random horizontal flip
    jitter: float = field(default=0.2, metadata=_range(0.0, 1.0))  # photometric jitter strength; 0 = off
    optimizer: str = field(default="adamw", metadata=_choices("adamw", "sgd"))  # adamw: robust on short schedules
    lr: float = field(default=1e-3, metadata=_range(0.0))  # peak learning rate
    backbone_lr_mult: float = field(default=0.1, metadata=_range(0.0))  # pretrained backbone learns slower
    weight_decay: float = field(default=1e-4, metadata=_range(0.0))  # not applied to norms and biases
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0))  # sgd only
    warmup_iters: int = field(default=20, metadata=_range(0))  # linear warm-up steps
    poly_power: float = field(default=0.9, metadata=_range(0.0))  # lr = peak * (1 - t/T)^power after warm-up
    grad_accum: int = field(default=1, metadata=_range(1))  # gradient accumulation steps
    aux_weight: float = field(default=0.4, metadata=_range(0.0))  # weight of the auxiliary head's loss
    ohem: bool = False  # online hard example mining
    ohem_thresh: float = field(default=0.7, metadata=_range(0.0, 1.0))  # keep pixels whose true-class prob < this
    ohem_min_kept: int = field(default=10_000, metadata=_range(1))  # ...but at least this many per batch
    class_weights: tuple[float, ...] = ()  # per-class loss weights (e.g. models.losses.enet_class_weights); () = unweighted
    lovasz_weight: float = field(default=0.0, metadata=_range(0.0))  # + this * Lovász-softmax (an mIoU surrogate) on the main output; 0 = off
    lovasz_stride: int = field(default=4, metadata=_range(1))  # Lovász on every Nth pixel and row: sorting all costs as much as a step
    ema_decay: float = field(default=0.0, metadata=_range(0.0, 0.9999))  # EMA of weights + buffers, validated and saved as model.pt (timm's ModelEma); 0 = off
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    amp_cpu: bool = False  # bf16 autocast on CPU as well: ~1.2x faster where the CPU has AVX512-BF16 or AMX, slower where it has neither
    channels_last: bool = True  # memory format on CUDA (ignored on CPU)
    channels_last_cpu: bool = False  # channels_last on CPU as well: oneDNN's NHWC kernels, ~1.12x faster bf16 CamVid steps on the 2-core EPYC
    checkpoint_every: int = field(default=100, metadata=_range(1))  # iterations between checkpoints
    num_workers: int = field(default=0, metadata=_range(0))  # DataLoader worker processes
    threads: int = field(default=0, metadata=_range(0))  # torch CPU threads; 0 = all cores Ray gives the task
    log_every: int = field(default=25, metadata=_range(1))  # iterations between progress lines


@dataclass(frozen=True)
class RoundsConfig:
    count: int = field(default=2, metadata=_range(0, 50))  # recursive train -> predict -> crf rounds
    min_change: float = field(default=0.0, metadata=_range(0.0, 1.0))  # stop early when <this fraction of pixels change
    warm_start: bool = True  # round k starts from round k-1's weights (false = from the pretrained backbone)
    lr_decay: float = field(default=1.0, metadata=_range(0.01, 1.0))  # round k trains at train.lr x lr_decay^(k-1): later rounds fine-tune; 1 = same lr every round
    foreground_network: bool = False  # the network learns foreground vs background only; each image's label names its foreground (many classes, few images each)
    scales: tuple[float, ...] = (1.0,)  # test-time scales when predicting the training images
    flip: bool = True  # add horizontally flipped predictions
    blend: float = field(default=0.0, metadata=_range(0.0, 1.0))  # share of the round's training labels (soft map) mixed into the prediction; 0 = network only
    ensemble: bool = False  # round k's soft map is the running mean of rounds 1..k's (snapshot ensemble of the rounds' networks)
    confidence: float = field(default=0.0, metadata=_range(0.0, 1.0))  # predicted pixels below this become ignore
    reset_iou: float = field(default=0.0, metadata=_range(0.0, 1.0))  # an image whose predicted foreground overlaps its first labels (crf/) with IoU below this starts over (from what rounds.reset_to says; outlier reset); 0 = off
    reset_to: str = field(default="coarse", metadata=_choices("coarse", "labels"))  # what a reset image starts over from: its coarse map, or the labels this round trained on
    other_classes: str = field(default="ignore", metadata=_choices("ignore", "keep"))  # pixels the net gives an unlabelled class
    other_classes_from_round: int = field(default=2, metadata=_range(1))  # from this round on, `keep` applies
    crf_bilateral_sxy: float = field(default=0.0, metadata=_range(0.0))  # appearance kernel width (px) of the rounds' CRF; 0 = crf.bilateral_sxy
    crf_bilateral_compat: float = field(default=0.0, metadata=_range(0.0))  # appearance kernel weight of the rounds' CRF; 0 = crf.bilateral_compat


@dataclass(frozen=True)
class RayConfig:
    enabled: bool = True  # false = run every stage serially in this process (debugging, tests)
    address: str = ""  # "" = start a local cluster; "auto" or "ray://..." joins one (also RAY_ADDRESS)
    num_cpus: int = field(default=0, metadata=_range(0))  # local cluster size; 0 = all cores
    max_in_flight: int = field(default=0, metadata=_range(0))  # per-image tasks queued at once; 0 = 2 x CPUs
    task_memory_mb: int = field(default=600, metadata=_range(0))  # memory each per-image task declares
    max_retries: int = field(default=3, metadata=_range(0))  # re-runs of a task whose worker died
    temp_dir: str = "/tmp/coarse2fine-ray"  # local cluster session files
    log_to_driver: bool = False  # show Ray worker logs in the terminal


@dataclass(frozen=True)
class FullConfig:
    # which reader in pipeline/datasets/ opens `root` (each expects that data set's standard layout)
    dataset: str = field(default="camvid", metadata=_choices("cityscapes", "bdd100k", "ade20k", "camvid", "voc", "folder"))
    root: str = "data/camvid"  # data set folder in its standard layout (see pipeline/datasets/)
    train_split: str = "train"  # split folder name used for training
    val_split: str = "val"  # split folder name used for validation / evaluation
    cityscapes_labels: str = field(default="labelIds", metadata=_choices("labelIds", "labelTrainIds"))  # which gtFine PNGs
    voc_aug: bool = False  # voc: read SegmentationClassAug (SBD-augmented) instead of SegmentationClass
    folder_images: str = "images"  # folder: image subfolder of <root>/<split>
    folder_masks: str = "masks"  # folder: mask subfolder of <root>/<split> (same stems, .png)
    folder_classes: int = field(default=0, metadata=_range(0, 255))  # folder: number of classes (required there)
    input_scale: float = field(default=1.0, metadata=_range(0.05, 4.0))  # images are resized by this before training/eval
    eval_scales: tuple[float, ...] = (1.0,)  # test-time scales (relative to input_scale)
    eval_flip: bool = False  # add horizontally flipped predictions at test time
    eval_window: int = field(default=0, metadata=_range(0))  # sliding-window size in px; 0 = whole image
    eval_stride: int = field(default=0, metadata=_range(0))  # sliding-window step; 0 = 2/3 of the window
    val_max_images: int = field(default=0, metadata=_range(0))  # validation during training on the first N; 0 = all
    val_during_training: bool = True  # score val at every checkpoint and keep best.pt
    best_metric: str = field(default="miou", metadata=_choices("miou", "pixel_acc"))  # what best.pt maximises
    num_workers: int = field(default=1, metadata=_range(1))  # Ray Train workers (1 = plain single-process training)
    use_gpu: bool = False  # Ray Train: one GPU per worker


@dataclass(frozen=True)
class Config:
    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    coarse: CoarseConfig = CoarseConfig()
    crf: CRFConfig = CRFConfig()
    train: TrainConfig = TrainConfig()
    rounds: RoundsConfig = RoundsConfig()
    ray: RayConfig = RayConfig()
    full: FullConfig = FullConfig()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def crf_for_round(self, k: int) -> CRFConfig:
        """The CRF settings that refine round k's predictions (k = 0: the coarse maps): `crf`, with the appearance
        kernel taken from `rounds.crf_bilateral_sxy` / `rounds.crf_bilateral_compat` in rounds k >= 1 where they are
        set (non-zero). The network's soft maps are calibrated differently from the coarse ones, so the kernel that
        suits one need not suit the other (docs/results_weak.md)."""
        if k < 1:
            return self.crf
        r = self.rounds
        return dataclasses.replace(self.crf, bilateral_sxy=r.crf_bilateral_sxy or self.crf.bilateral_sxy,
                                   bilateral_compat=r.crf_bilateral_compat or self.crf.bilateral_compat)

    def section_hash(self, *sections: str) -> str:
        """Short stable hash of the named sections (what a stage's output depends on)."""
        blob = json.dumps({s: dataclasses.asdict(getattr(self, s)) for s in sections}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------------------------
# Loading (the generic reading and checking is in pipeline/config_io.py)

def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read YAML (with one optional `base:`), apply `a.b=c` overrides, validate and build a frozen Config."""
    raw: dict = {}
    if path is not None:
        raw = read_with_base(Path(path))
    for item in overrides:
        apply_override(raw, item)
    return build(Config, raw, where="")
