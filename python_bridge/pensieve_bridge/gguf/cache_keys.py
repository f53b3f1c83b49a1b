"""Where a GGUF's conversion lives: its sha256 (memoised) and the cache directory named by it."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Optional

from .progress import Progress

HASH_CHUNK = 8 << 20


def _memo_path(out_root: Path) -> Path:
    return out_root / ".hashes.json"


def file_sha256(path: Path, out_root: Optional[Path] = None) -> str:
    """sha256 of a GGUF, memoised by (path, size, mtime) under out_root.

    Ollama blobs are named by their hash already; other files cost one read.
    """
    path = path.resolve()
    if m := re.fullmatch(r"sha256-([0-9a-f]{64})", path.name):
        return m.group(1)
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    memo: dict[str, str] = {}
    if out_root and _memo_path(out_root).is_file():
        try:
            memo = json.loads(_memo_path(out_root).read_text())
        except ValueError:
            memo = {}
    if key in memo:
        return memo[key]
    digest = hashlib.sha256()
    bar = Progress(f"hash {path.name}", st.st_size, unit="B")
    with open(path, "rb") as f:
        while block := f.read(HASH_CHUNK):
            digest.update(block)
            bar.advance(len(block))
    bar.close()
    if out_root:
        memo[key] = digest.hexdigest()
        out_root.mkdir(parents=True, exist_ok=True)
        tmp = _memo_path(out_root).with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo, indent=1))
        os.replace(tmp, _memo_path(out_root))
    return digest.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-").lower()[:60] or "model"


def cache_dir_name(sha: str, stem: str, dtype: str, quantize: Optional[int],
                   tokenizer_only: bool = False) -> str:
    suffix = "-tokenizer" if tokenizer_only else f"-q{quantize}" if quantize else f"-{dtype}"
    return f"{sha[:16]}-{_slug(stem)}{suffix}"


def find_cached(out_root: Path, dir_name: str) -> Optional[Path]:
    """A finished conversion of the same bytes and options, whatever its name.

    The key is the hash (and dtype/quantization); the name part is only for
    people, so the same blob imported as a file or via ollama: is reused.
    """
    exact = out_root / dir_name
    if (exact / "config.json").is_file():
        return exact
    prefix, suffix = dir_name.split("-", 1)[0], dir_name.rsplit("-", 1)[1]
    for d in sorted(out_root.glob(f"{prefix}-*-{suffix}")):
        if (d / "config.json").is_file():
            return d
    return None
