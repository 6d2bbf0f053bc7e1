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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config_io import ConfigError, apply_override, build, read_with_base  # noqa: F401 (ConfigError and
# build are used from here by the CLI, the stages and the benchmarks)
from pipeline.config_rules import (EVIDENCE, FUSED, RENAMED_KEYS, check_config, check_old_keys,  # noqa: F401
                                   holdout_as_text, holdout_spec)  # (EVIDENCE, FUSED, RENAMED_KEYS, holdout_spec:
# used from here by the stages, the data readers and the tests)


def _range(lo: float | None = None, hi: float | None = None, **kw: Any) -> dict:
    return {"range": (lo, hi), **kw}


def _choices(*options: str, **kw: Any) -> dict:
    return {"choices": options, **kw}


def _feeds(*stages: str, from_round: int = 0, **kw: Any) -> dict:
    """Field metadata: the stages whose outputs this field changes (their hashes include it), from round
    `from_round` on. Without it a field feeds its section's stages (SECTION_FEEDS); `_feeds()` feeds none.
    `unset=<value>` (a key added later): while the field holds that value it is left out of the hashes, so the
    stages of runs made before the key existed keep their hashes."""
    return {"feeds": stages, "from_round": from_round, **kw}


def _imagenet_classes_digest(value: str) -> str:
    """What `coarse.cam_imagenet_classes` reads: the shipped WordNet table, and the override file unless `wordnet`."""
    from pipeline.coarse.wordnet import TABLE  # here, not at the top: the config stays free of the algorithm modules

    digest = f"wordnet sha256:{hashlib.sha256(TABLE.read_bytes()).hexdigest()}"
    return digest if value == "wordnet" else f"{_file_digest(value)} over {digest}"


def _file_digest(path: str) -> str:
    """"<path> sha256:<hex>" of a file the config names ("<path> missing" when it is absent)."""
    try:
        return f"{path} sha256:{hashlib.sha256(Path(path).read_bytes()).hexdigest()}"
    except OSError:
        return f"{path} missing"


GROUND_TRUTH = ("score", "reference", "compare")  # what the ground-truth keys feed: scoring, and the full reference


@dataclass(frozen=True)
class RunConfig:
    name: str = field(default="demo", metadata=_feeds())  # run directory is <root>/<name>/
    root: str = field(default="runs", metadata=_feeds())  # parent folder of all runs
    # seeds numpy/torch/python
    seed: int = field(default=0, metadata=_range(0, **_feeds("coarse", "train", "full", "reference")))


@dataclass(frozen=True)
class DataConfig:
    # demo: generate the embedded set into root
    kind: str = field(default="folder", metadata=_choices("folder", "demo"))
    root: str = "data/demo"  # data set folder (relative paths are relative to the working directory)
    images: str = "images"  # subfolder of root holding the images
    labels: str = "labels.csv"  # CSV `image,label` (one label per image); "" = take labels from label_pattern
    label_pattern: str = ""  # regex on the file stem whose group 1 is the class name, e.g. "^(.*?)\\d\\d_" (COCO-MVal)
    classes: str = "classes.txt"  # one class name per line, background first; "" = background + sorted labels
    # optional ground truth (same stems, .png): scoring, and the training of the full reference; "" = none
    masks: str = field(default="masks", metadata=_feeds(*GROUND_TRUTH))
    # -1: GT holds class ids; else this value = the image's class
    gt_foreground_value: int = field(default=-1, metadata=_range(-1, 255, **_feeds(*GROUND_TRUTH)))
    # GT values that are not scored
    gt_ignore_values: tuple[int, ...] = field(default=(255,), metadata=_feeds(*GROUND_TRUTH))
    class_agnostic: bool = False  # one foreground class, labels ignored (GrabCut-style)
    max_pixels: int = field(default=40_000_000, metadata=_range(1))  # refuse larger images (memory guard)
    on_bad_image: str = field(default="error", metadata=_choices("error", "skip"))  # skip: list it in the run report
    demo_images: int = field(default=60, metadata=_range(6, 10_000))  # demo: number of training images
    # photos no training stage sees, scored after each round (round<k>/holdout): "" = none; a number in (0, 1) = that
    # share of the images, chosen by a hash of each image id; else a folder laid out like root, relative to root
    # (pipeline/data/holdout.py)
    holdout: str = field(default="", metadata=_feeds("coarse", "reference", "holdout", "compare", unset=""))


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


@dataclass(frozen=True)
class CoarseConfig:
    # saliency: weight-free superpixel saliency; ddt: co-localisation; cam: class activation maps; isnet: salient-object
    # network (trained with pixel masks on other data: the second track); fusion: geometric mean of several;
    # steered: isnet's salient objects picked by the label's class evidence (the second track)
    method: str = field(default="saliency",
                        metadata=_choices("saliency", "ddt", "cam", "isnet", "fusion", "steered"))
    # fusion: the methods (saliency, ddt, cam) whose maps it averages (geometric mean)
    fusion: tuple[str, ...] = ("ddt", "saliency")
    image_side: int = field(default=448, metadata=_range(64, 4096))  # CNN input long side for ddt/cam
    # ddt: statistics per label group or per image
    ddt_groups: str = field(default="label", metadata=_choices("label", "image"))
    fg_threshold: float = field(default=0.6, metadata=_range(0.0, 1.0))  # p >= this -> the image's class
    bg_threshold: float = field(default=0.3, metadata=_range(0.0, 1.0))  # p < this -> background; between -> ignore 255
    # cam: head fine-tuning epochs; 0 = ImageNet top-1 CAM
    cam_epochs: int = field(default=10, metadata=_range(0, 1000))
    # cam: each label's ImageNet classes (needs cam_epochs: 0): wordnet = derived from WordNet; a YAML file = WordNet's
    # with the file's entries in place for the labels it names; "" = none
    cam_imagenet_classes: str = field(default="", metadata={"digest": _imagenet_classes_digest})
    isnet_weights: str = ""  # isnet: an ISNet ONNX file; "" = the one `coarse2fine weights isnet` cached
    isnet_flip: bool = True  # isnet: average the maps of the image and of its mirror image (twice the cost)
    single_object: bool = False  # isnet: keep only the largest salient object (data with one object per photo)
    # steered: the class evidence (cam, ddt, saliency; objects = each salient object's crop classified, needs cam and
    # cam_imagenet_classes) that picks among the salient objects of isnet, the only salient-object network shipped
    evidence: tuple[str, ...] = ("cam",)


@dataclass(frozen=True)
class CRFConfig:
    enabled: bool = True  # false = pass masks through unchanged
    iterations: int = field(default=10, metadata=_range(1, 100))  # mean-field iterations
    bilateral_sxy: float = field(default=80.0, metadata=_range(0.1))  # appearance kernel width (px)
    bilateral_srgb: float = field(default=13.0, metadata=_range(0.1))  # appearance kernel colour width (0-255)
    bilateral_compat: float = field(default=10.0, metadata=_range(0.0))  # appearance kernel weight
    max_side: int = field(default=1024, metadata=_range(64))  # larger images are refined downscaled, then upsampled


@dataclass(frozen=True)
class RoundsCRFConfig:
    """The appearance kernel of the CRF that refines the network's maps in the rounds (every other setting is
    `crf`'s): the network's maps are calibrated differently from the coarse ones, so they may need another kernel."""
    bilateral_sxy: float = field(default=80.0, metadata=_range(0.1))  # appearance kernel width (px)
    bilateral_compat: float = field(default=10.0, metadata=_range(0.0))  # appearance kernel weight


@dataclass(frozen=True)
class TrainConfig:
    iterations: int = field(default=300, metadata=_range(1))  # optimiser steps per training run
    batch_size: int = field(default=8, metadata=_range(1))  # images per step (per worker)
    crop: tuple[int, int] = (192, 192)  # training crop (h, w); padded with fill 255 (mask) / mean (image)
    scale_range: tuple[float, float] = (0.5, 2.0)  # random rescale before cropping
    jitter: float = field(default=0.2, metadata=_range(0.0, 1.0))  # photometric jitter strength; 0 = off
    # adamw: robust on short schedules; sgd: momentum 0.9
    optimizer: str = field(default="adamw", metadata=_choices("adamw", "sgd"))
    lr: float = field(default=1e-3, metadata=_range(0.0))  # peak learning rate
    backbone_lr_mult: float = field(default=0.1, metadata=_range(0.0))  # pretrained backbone learns slower
    weight_decay: float = field(default=1e-4, metadata=_range(0.0))  # not applied to norms and biases
    warmup_iters: int = field(default=20, metadata=_range(0))  # linear warm-up steps, then poly decay (power 0.9)
    ohem: bool = False  # online hard example mining: the loss keeps the pixels whose true-class prob < 0.7
    ohem_min_kept: int = field(default=10_000, metadata=_range(1))  # ...but at least this many per batch
    # bf16 autocast: on CUDA only, on every device, never
    amp: str = field(default="cuda", metadata=_choices("cuda", "always", "off"))
    # NHWC memory format: same choices
    channels_last: str = field(default="cuda", metadata=_choices("cuda", "always", "off"))
    checkpoint_every: int = field(default=100, metadata=_range(1, **_feeds()))  # iterations between checkpoints
    loader_workers: int = field(default=0, metadata=_range(0, **_feeds()))  # DataLoader worker processes
    log_every: int = field(default=25, metadata=_range(1, **_feeds()))  # iterations between progress lines


@dataclass(frozen=True)
class RoundsConfig:
    count: int = field(default=2, metadata=_range(0, 50))  # recursive train -> predict -> crf rounds
    min_change: float = field(default=0.0, metadata=_range(0.0, 1.0))  # stop early when <this fraction of pixels change
    # round k trains at train.lr x lr_decay^(k-1); 1 = same lr every round
    lr_decay: float = field(default=1.0, metadata=_range(0.01, 1.0, **_feeds("train", from_round=2)))
    # the network learns foreground vs background; each image's label names its foreground
    foreground_network: bool = field(default=False, metadata=_feeds("train", "predict", "holdout", "reference"))
    # round k's soft map is the mean of rounds 1..k's
    ensemble: bool = field(default=False, metadata=_feeds("predict", from_round=2))
    # an image whose prediction overlaps its first labels with IoU below this starts over from its coarse map; 0 = off
    reset_iou: float = field(default=0.0, metadata=_range(0.0, 1.0, **_feeds("predict")))
    # from this round on, a class the image is not labelled with stays where the network finds it; 0 = never
    keep_other_classes_from: int = field(default=0, metadata=_range(0, **_feeds("predict", "holdout")))


@dataclass(frozen=True)
class RayConfig:
    enabled: bool = True  # false = run every stage serially in this process (debugging, tests)
    address: str = ""  # "" = start a local cluster; "auto" or "ray://..." joins one (also RAY_ADDRESS)
    num_cpus: int = field(default=0, metadata=_range(0))  # local cluster size; 0 = all cores
    task_memory_mb: int = field(default=600, metadata=_range(0))  # memory each per-image task declares
    # network actors of coarse/predict (sharded on Ray Data); 0 = one per GPU, or one per node of a CPU-only cluster,
    # and on a single CPU-only node one device task instead
    actors: int = field(default=0, metadata=_range(0, **_feeds()))
    # images per call of the sharded passes' read, network and write steps (coarse, predict); not a network batch
    images_per_call: int = field(default=4, metadata=_range(1, **_feeds()))
    temp_dir: str = "/tmp/coarse2fine-ray"  # local cluster session files


@dataclass(frozen=True)
class FullConfig:
    # which reader in pipeline/data/datasets/ opens `root` (each expects that data set's standard layout)
    dataset: str = field(default="camvid",
                         metadata=_choices("cityscapes", "bdd100k", "ade20k", "camvid", "voc", "folder"))
    root: str = "data/camvid"  # data set folder in its standard layout (see pipeline/data/datasets/)
    train_split: str = "train"  # split used for training (voc: train_aug reads the SBD-augmented SegmentationClassAug)
    val_split: str = "val"  # split folder name used for validation / evaluation
    folder_classes: int = field(default=0, metadata=_range(0, 255))  # folder: number of classes (required there)
    # images are resized by this before training/eval
    input_scale: float = field(default=1.0, metadata=_range(0.05, 4.0))
    # sliding-window size in px (step 2/3 of it); 0 = whole image
    eval_window: int = field(default=0, metadata=_range(0))
    val_max_images: int = field(default=0, metadata=_range(0))  # validation at each checkpoint on the first N; 0 = all
    # Ray Train workers (1 = plain single-process training)
    train_workers: int = field(default=1, metadata=_range(1, **_feeds()))
    use_gpu: bool = field(default=False, metadata=_feeds())  # Ray Train: one GPU per worker


@dataclass(frozen=True)
class TestTimeConfig:
    """How every prediction of a trained network is made: the rounds' predict stage and full supervision's
    evaluation. Probabilities are averaged over the scales and, with flip, the mirror images."""
    # test-time scales (full: relative to full.input_scale)
    scales: tuple[float, ...] = field(default=(1.0,), metadata=_feeds("predict", "holdout", "full"))
    # add horizontally flipped predictions
    flip: bool = field(default=True, metadata=_feeds("predict", "holdout", "full"))


SECTION_FEEDS = {  # the stages a section's fields feed unless a field says otherwise (_feeds)
    "data": ("coarse", "reference"), "coarse": ("coarse",), "crf": ("crf",), "model": ("train", "full", "reference"),
    "train": ("train", "full", "reference"), "full": ("full",),
}  # run, rounds_crf (applied through Config.crf_for_round), rounds, ray and test_time: only their tagged fields


@dataclass(frozen=True)
class Config:
    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    coarse: CoarseConfig = CoarseConfig()
    crf: CRFConfig = CRFConfig()
    rounds_crf: RoundsCRFConfig = RoundsCRFConfig()
    train: TrainConfig = TrainConfig()
    rounds: RoundsConfig = RoundsConfig()
    ray: RayConfig = RayConfig()
    full: FullConfig = FullConfig()
    test_time: TestTimeConfig = TestTimeConfig()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def crf_for_round(self, k: int) -> CRFConfig:
        """The CRF that refines round k's maps (k = 0: the coarse maps): `crf`, with `rounds_crf`'s kernel in k >= 1."""
        if k < 1:
            return self.crf
        return dataclasses.replace(self.crf, **dataclasses.asdict(self.rounds_crf))

    def keys_feeding(self, stage: str, round_: int = 0) -> dict[str, Any]:
        """{"section.key": value} of every field whose value changes `stage`'s output in round `round_` (see _feeds)."""
        keys: dict[str, Any] = {}
        for section in dataclasses.fields(self):
            values = getattr(self, section.name)
            for f in dataclasses.fields(values):
                feeds = f.metadata.get("feeds", SECTION_FEEDS.get(section.name, ()))
                if stage in feeds and round_ >= f.metadata.get("from_round", 0):
                    value = getattr(values, f.name)
                    if "unset" in f.metadata and value == f.metadata["unset"]:
                        continue
                    # files the stage reads: their content counts, so editing one reruns the stage
                    digest = f.metadata.get("digest") if value else None
                    keys[f"{section.name}.{f.name}"] = digest(value) if digest else value
        return keys


# ---------------------------------------------------------------------------------------------------------------
# Loading (the generic reading and checking is in pipeline/config_io.py)

def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read YAML (with one optional `base:`), apply `a.b=c` overrides, validate and build a frozen Config."""
    raw: dict = {}
    if path is not None:
        raw = read_with_base(Path(path))
    for item in overrides:
        apply_override(raw, item)
    check_old_keys(raw)
    holdout_as_text(raw)
    cfg = build(Config, raw, where="", renamed=RENAMED_KEYS)
    check_config(cfg)
    return cfg

