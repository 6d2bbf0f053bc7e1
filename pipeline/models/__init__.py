"""SRM/CRM segmentation network and its encoders: `build_model(cfg.model, num_classes)`, `build_backbone`."""
from pipeline.models.backbones import build_backbone
from pipeline.models.segnet import build_model

__all__ = ["build_backbone", "build_model"]
