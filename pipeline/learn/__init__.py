"""Learning: the training loop (`engine`), inference and evaluation (`inference`), the loss (`losses`) and
data-parallel training with Ray Train (`distributed`)."""
