"""Data: the weak-label data set (`weak`), the embedded demo (`demo`), joint image/mask transforms (`transforms`)
and the readers of the fully supervised data sets (`datasets/`). Every one of them raises `DatasetError`."""


class DatasetError(ValueError):
    """A data set on disk is not usable (a folder or file missing, empty or inconsistent); the message names the
    path and says why. The weak and the fully supervised readers raise this one class; the CLI reports it in one line,
    exit status 2."""
