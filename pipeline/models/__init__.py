"""SRM/CRM segmentation network and backbones: `build_model(cfg.model, num_classes)`, `build_backbone`, `SegLoss`."""
from pipeline.models.backbones import build_backbone
from pipeline.models.losses import SegLoss
from pipeline.models.segnet import build_model

__all__ = ["build_backbone", "build_model", "SegLoss"]
