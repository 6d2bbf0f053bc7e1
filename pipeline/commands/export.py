"""Export a trained network to TorchScript (`model.ts`) and ONNX (`model.onnx`), each checked against PyTorch.

    model, classes, cfg = load_run_model(Path("runs/demo"))                      # pipeline.commands.trained
    diffs = export_model(model, Path("runs/demo/export"), height=512, width=512)  # raises ExportError on mismatch

Both files take one normalised image batch `image` float32 [1, 3, height, width] ((pixel / 255 - mean) / std with
the model's `model.mean` / `model.std`) and return `logits` float32 [1, classes, height, width] (the "out" head only;
the auxiliary head is a training-time output).

Fixed input size (as of torch 2.14): dynamic H/W axes do not export for this network, and the reason is not the
SRM's grid_sample (ONNX GridSample, opset >= 16, exports and matches) but two size-dependent steps:
- the EfficientNet-Lite backbone computes TensorFlow "SAME" padding from the input size in Python (math.ceil, `if`);
- the CRM pools every stage onto the stride-32 grid with adaptive_avg_pool2d, whose output size must be constant.
The legacy TorchScript exporter (`dynamo=False`) rejects the adaptive pooling even at a fixed size; the
torch.export-based exporter (`dynamo=True`, needs the `onnxscript` package) exports a fixed size but not symbolic
H/W, not even restricted to multiples of 32. So both files are specialised to (height, width); export once per
deployment size. The TorchScript trace likewise bakes the padding in.

Opset: the torch.export-based exporter writes opset 18 and cannot down-convert its Pad nodes (asking for 17 logs
"No Adapter To Version 17 for Pad" and still writes 18), so `opset` must be >= 18; GridSample alone needs >= 16.

Check: a seeded random input (not the one used for tracing) is run through PyTorch, `torch.jit.load(model.ts)` and
onnxruntime (CPU); the maximum absolute difference must be <= 1e-4 x max |PyTorch logit|, otherwise `ExportError`
names the file and the difference (the differences seen in practice: docs/experiments.md).
Files are written to a temporary name and renamed (atomic).
"""
from __future__ import annotations

import copy
import io
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.io import atomic_write_bytes

TOLERANCE = 1e-4  # allowed max |difference| relative to the logit scale max |PyTorch logit|
MIN_SCALE = 1e-6  # logit scale floor, so that an all-zero output still gets a (tiny) tolerance
MIN_OPSET = 18  # what the torch.export-based ONNX exporter writes (see module docstring)


class ExportError(RuntimeError):
    """An exported file does not reproduce the PyTorch model; the message names the file and the difference."""


class LogitsOnly(nn.Module):
    """Wraps a segmentation network so that it returns only the "out" logits tensor (exporters need a tensor)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _check(name: Path, ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(max |diff|, allowed) between reference and exported logits; ExportError when shapes or values differ."""
    if got.shape != ref.shape:
        raise ExportError(f"{name}: output shape {got.shape} differs from PyTorch {ref.shape}")
    diff = float(np.abs(got.astype(np.float64) - ref).max())
    allowed = TOLERANCE * max(MIN_SCALE, float(np.abs(ref).max()))
    if not diff <= allowed:  # also catches NaN
        raise ExportError(f"{name}: max |logit difference| {diff:.3g} to PyTorch exceeds {allowed:.3g}")
    return diff, allowed


def _export_torchscript(wrapped: nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings: the sizes are baked in on purpose (module docstring)
        traced = torch.jit.trace(wrapped, example, check_trace=False)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)  # (torch.jit.save/load warn that TorchScript is deprecated in favour of export)
    atomic_write_bytes(path, buf.getvalue())


def _export_onnx(wrapped: nn.Module, example: torch.Tensor, path: Path, opset: int) -> int:
    """Write `path` atomically; returns the opset the file declares."""
    import onnx

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.onnx")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapped, (example,), None, dynamo=True, opset_version=opset,
                                        input_names=["image"], output_names=["logits"], verbose=False)
        program.save(tmp, external_data=False)
        declared = max((o.version for o in onnx.load(tmp).opset_import if o.domain in ("", "ai.onnx")), default=0)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return declared


def export_model(model: nn.Module, out_dir: Path, *, height: int, width: int, opset: int = MIN_OPSET) -> dict:
    """Write out_dir/model.ts and out_dir/model.onnx for [1, 3, height, width] inputs, verify both; returns diffs."""
    if height < 32 or width < 32:
        raise ValueError(f"export size {height}x{width}: height and width must be >= 32 (the stride-32 grid)")
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset}: the ONNX exporter writes opset {MIN_OPSET} and cannot down-convert "
                         f"(GridSample of the SRM needs >= 16 in any case)")
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("ONNX export checks need onnxruntime and onnxscript: pip install -e '.[dev]'") from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    wrapped = LogitsOnly(copy.deepcopy(model).cpu().eval()).eval()  # the caller's model stays where it is
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(1, 3, height, width, generator=gen)
    probe = torch.randn(1, 3, height, width, generator=gen)  # a different input than the one traced
    with torch.no_grad():
        ref = wrapped(probe).numpy().astype(np.float64)

    ts_path, onnx_path = out_dir / "model.ts", out_dir / "model.onnx"
    _export_torchscript(wrapped, example, ts_path)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ts_out = torch.jit.load(str(ts_path), map_location="cpu")(probe).numpy()
    ts_diff, allowed = _check(ts_path, ref, ts_out)

    declared = _export_onnx(wrapped, example, onnx_path, opset)
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    onnx_out = session.run(["logits"], {"image": probe.numpy()})[0]
    onnx_diff, _ = _check(onnx_path, ref, onnx_out)
    return {"torchscript": str(ts_path), "onnx": str(onnx_path), "height": height, "width": width,
            "opset": declared, "dynamic_size": False, "logit_scale": float(np.abs(ref).max()),
            "tolerance": allowed, "torchscript_max_abs_diff": ts_diff, "onnx_max_abs_diff": onnx_diff,
            "seconds": round(time.time() - start, 2)}
