"""Coarse foreground maps from image-level labels (the first stage, `stages/coarse.py`).

- `saliency`: weight-free SLIC superpixels + robust image-border background prior (the fallback).
- `ddt`: Deep Descriptor Transforming co-localisation on frozen EfficientNet-Lite0 features, per label or per image.
- `cam`: class activation maps of a Lite0 head fine-tuned on the labels (ImageNet top-1 CAM when class-agnostic).
- `fusion`: per-pixel geometric mean of the above.
`features` holds the shared backbone helpers. Real-data scores: `benchmarks/coarse_real.py`.
"""
