"""Data: the weak-label data set (`weak`), the embedded demo (`demo`), joint image/mask transforms (`transforms`)
and the readers of the fully supervised data sets (`datasets/`)."""
