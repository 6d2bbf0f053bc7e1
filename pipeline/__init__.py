"""coarse2fine: semantic segmentation from image-level labels.

Layers (each imports only the ones above it):
- core: `config` (+ `config_io`), `io`, `labels`, `metrics`, `crf`, `stage` (the contract between stages)
- `data/`, `models/`, `coarse/` (the coarse-mask methods)
- `learn/`: training engine, inference, loss, Ray Train
- `orchestration/`: the weak run over its stages, Ray helpers
- `commands/`: status, report, predict, export
The stages themselves live in the top-level `stages/` package; `orchestrate.py` is the CLI that wires them up.
"""
