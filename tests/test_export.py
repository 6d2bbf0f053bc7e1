"""pipeline.commands.export: TorchScript and ONNX files reproduce the PyTorch logits; mismatches raise ExportError."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.commands.export import ExportError, _check, export_model
from pipeline.models import build_model
from pipeline.models.srm import SemanticRefinement



def tiny_model() -> torch.nn.Module:
    """Width-16, pretrained-none network whose SRMs really warp: random offset convs (zero-init by default)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(width=16, pretrained="none", backbone="lite0"), 3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SemanticRefinement):
                m.offset.weight.normal_(0.0, 0.5)
                m.offset.bias.normal_(0.0, 1.0)
    return model.eval()


def test_both_exports_match_pytorch(tmp_path):
    model = tiny_model()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = model(x)["out"]
        offset = model.decoder.srm[2].predict_offset(*_srm_inputs(model, x))
    assert offset.abs().max() > 0.1  # the SRMs are not the identity: grid_sample is really exercised
    result = export_model(model, tmp_path / "export", height=64, width=96)
    assert (tmp_path / "export" / "model.ts").is_file() and (tmp_path / "export" / "model.onnx").is_file()
    assert result["opset"] == 18 and result["dynamic_size"] is False
    assert result["onnx_max_abs_diff"] <= result["tolerance"] and result["torchscript_max_abs_diff"] <= 1e-6
    assert result["tolerance"] == pytest.approx(1e-4 * result["logit_scale"])
    # the files themselves, loaded fresh, give the PyTorch logits for another input
    import onnxruntime as ort

    session = ort.InferenceSession(str(tmp_path / "export" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"image": x.numpy()})[0]
    assert got.shape == (1, 3, 64, 96)
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-4 * float(ref.abs().max()))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated in favour of torch.export
        ts = torch.jit.load(str(tmp_path / "export" / "model.ts"))(x)
    np.testing.assert_allclose(ts.numpy(), ref.numpy(), atol=1e-6)
    assert not list((tmp_path / "export").glob(".*"))  # no temporary files left behind


def _srm_inputs(model, x):
    """The (low, high) pair fed to the last SRM: recompute the decoder up to it."""
    feats = model.backbone(x)
    dec = model.decoder
    p = dec.top(feats)
    for i, feat in enumerate((feats[2], feats[1], feats[0])):
        lateral = dec.lateral[i](feat)
        if i == 2:
            return p, lateral
        p = dec.smooth[i](lateral + dec.srm[i](p, lateral))


def test_check_tolerance_is_relative_to_logit_scale():
    ref = np.array([[0.0, 10.0]])
    diff, allowed = _check("m.onnx", ref, np.array([[0.0, 10.0005]], np.float32))
    assert allowed == pytest.approx(1e-3) and diff == pytest.approx(5e-4, rel=1e-3)
    with pytest.raises(ExportError, match=r"m.onnx: max \|logit difference\| 0.002 to PyTorch exceeds 0.001"):
        _check("m.onnx", ref, np.array([[0.0, 10.002]]))
    _check("m.ts", np.array([[0.1]]), np.array([[0.100009]]))  # logits of 0.1: 1e-5 allowed
    with pytest.raises(ExportError, match="exceeds 1e-05"):
        _check("m.ts", np.array([[0.1]]), np.array([[0.10002]]))
    with pytest.raises(ExportError, match=r"output shape \(1, 3\) differs"):
        _check("m.ts", ref, np.zeros((1, 3)))
    with pytest.raises(ExportError):
        _check("m.ts", ref, np.array([[np.nan, 10.0]]))


def test_bad_arguments(tmp_path):
    model = torch.nn.Identity()
    with pytest.raises(ValueError, match="opset 17"):
        export_model(model, tmp_path, height=64, width=64, opset=17)
    with pytest.raises(ValueError, match="must be >= 32"):
        export_model(model, tmp_path, height=16, width=64)
