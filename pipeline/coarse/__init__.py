"""Coarse foreground maps from image-level labels (the first stage, `stages/coarse.py`).

Every method is one module with the same shape (`method.py`: `method(setting) -> Method`); the stage picks it from
`coarse.method` in its table METHODS.
- `saliency`: weight-free SLIC superpixels + robust image-border background prior (the fallback).
- `ddt`: Deep Descriptor Transforming co-localisation on frozen EfficientNet-Lite0 features, per label or per image.
- `cam`: class activation maps of a Lite0 head fine-tuned on the labels (ImageNet top-1 CAM when class-agnostic).
- `salient` (`coarse.method: isnet`): ISNet's class-agnostic salient-object map (the second track).
- `fusion`: per-pixel geometric mean of saliency, ddt, cam.
- `steered`: ISNet's salient objects picked by the label's class evidence; `objects` classifies each object's crop.
`features` holds the shared backbone helpers, `imagenet_classes` each label's ImageNet classes, derived from WordNet
by `wordnet` (its table written by `wordnet_build`). Real-data scores: `benchmarks/coarse_real.py`.
"""
