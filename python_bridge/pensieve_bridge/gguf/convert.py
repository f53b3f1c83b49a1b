"""GGUF → MLX model directory (config.json, model.safetensors, tokenizer).

Torch-free: the `gguf` package reads the file (memory-mapped) and
dequantizes every tensor type, K-quants included (mx.load refuses those).
Tensors are converted one at a time and streamed into a safetensors file
whose header is written first, so memory holds one float32 tensor, never a
second copy of the model. The result is written to a temp dir and renamed,
under a key of the file's sha256, so each file is converted once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

from . import arch as archmod
from .cache_keys import cache_dir_name, file_sha256, find_cached
from .progress import Progress, log
from .tokenizer import GGUFVocab, write_tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub

DTYPES = ("float32", "float16", "bfloat16")
_ST_DTYPE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}


def default_dtype() -> str:
    """float32 where MLX runs on the CPU (its fast BLAS path), else float16."""
    try:
        import mlx.core as mx
        return "float16" if mx.metal.is_available() else "float32"
    except Exception:  # no MLX: CPU is the safe assumption
        return "float32"


def default_out_root() -> Path:
    return Path(os.environ.get("PENSIEVE_HOME", Path.home() / ".pensieve")) / "models"


# -- reading ------------------------------------------------------------------

def read_fields(reader) -> dict[str, Any]:
    # GGUF.* are the reader's own header entries, not metadata.
    return {name: f.contents() for name, f in reader.fields.items()
            if not name.startswith("GGUF.")}


def _numpy_shape(tensor) -> tuple[int, ...]:
    return tuple(int(d) for d in reversed(tensor.shape))  # ggml lists ne0 first


def dequantize(tensor) -> np.ndarray:
    import gguf
    data = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    return np.asarray(data, dtype=np.float32).reshape(_numpy_shape(tensor))


def _to_dtype(w: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "float32":
        return np.ascontiguousarray(w, dtype=np.float32)
    if dtype == "float16":
        return np.ascontiguousarray(w, dtype=np.float16)
    # numpy has no bfloat16: round-to-nearest-even on the float32 bits.
    bits = np.ascontiguousarray(w, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


# -- safetensors streaming ----------------------------------------------------

class SafetensorsStream:
    """Write a safetensors file whose tensor list is known before the data."""

    def __init__(self, path: Path, entries: list[tuple[str, tuple, str]]):
        header: dict[str, Any] = {"__metadata__": {"format": "mlx"}}
        offset = 0
        self.sizes: dict[str, int] = {}
        for name, shape, dtype in entries:
            size = int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE[dtype]
            header[name] = {"dtype": _ST_DTYPE[dtype], "shape": list(shape),
                            "data_offsets": [offset, offset + size]}
            self.sizes[name] = size
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # data must start 8-byte aligned
        self.order = [e[0] for e in entries]
        self.next = 0
        self.f = open(path, "wb")
        self.f.write(len(raw).to_bytes(8, "little") + raw)

    def write(self, name: str, array: np.ndarray) -> None:
        # Tensors must come in header order, each exactly its declared size.
        assert self.order[self.next] == name, (name, self.order[self.next])
        data = memoryview(np.ascontiguousarray(array)).cast("B")
        assert len(data) == self.sizes[name], (name, len(data), self.sizes[name])
        self.f.write(data)
        self.next += 1

    def close(self) -> None:
        self.f.close()
        assert self.next == len(self.order), "not every tensor was written"


# -- conversion ---------------------------------------------------------------

def _plan(reader, fields: dict[str, Any]):
    arch = fields.get("general.architecture")
    if not arch:
        raise ValueError("GGUF file has no general.architecture")
    archmod.check_supported(arch)
    tensors = {t.name: archmod.TensorInfo(t.name, _numpy_shape(t)) for t in reader.tensors}
    plan = archmod.plan(arch, archmod.Meta(fields, arch), tensors)
    if arch == "llama" and "rope_freqs.weight" in tensors:
        rope = next(t for t in reader.tensors if t.name == "rope_freqs.weight")
        plan.config["rope_scaling"] = archmod.llama3_rope_scaling(
            archmod.Meta(fields, arch), plan.config, dequantize(rope))
    return arch, plan


def _check_against_mlx(config: dict, entries: list[tuple[str, tuple, str]]) -> None:
    """Names and shapes must be exactly what mlx_lm's model class holds.

    The model is built lazily (MLX never evaluates its random init), so this
    costs no memory; it catches a wrong mapping before minutes of work.
    """
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes
    model_cls, args_cls = _get_classes(config)
    model = model_cls(args_cls.from_dict(config))
    want = {k: tuple(v.shape) for k, v in tree_flatten(model.parameters())}
    have = {name: shape for name, shape, _ in entries}
    if "lm_head.weight" not in have:
        want.pop("lm_head.weight", None)  # tied to the embedding: none to load
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    wrong = [n for n in want if n in have and tuple(have[n]) != want[n]]
    if missing or extra or wrong:
        raise ValueError(f"converted weights do not fit mlx_lm's {config['model_type']}: "
                         f"missing {missing[:5]}, unexpected {extra[:5]}, "
                         f"wrong shape {[(n, have[n], want[n]) for n in wrong[:5]]}")


def _generation_config(fields: dict[str, Any], vocab: GGUFVocab) -> dict:
    gen: dict[str, Any] = {}
    for key, name in (("general.sampling.temp", "temperature"),
                      ("general.sampling.top_p", "top_p"),
                      ("general.sampling.top_k", "top_k"),
                      ("general.sampling.min_p", "min_p"),
                      ("general.sampling.penalty_repeat", "repetition_penalty")):
        if fields.get(key) is not None:
            gen[name] = fields[key]
    if gen:
        gen["do_sample"] = True
    if vocab.bos is not None:
        gen["bos_token_id"] = vocab.bos
    if ids := vocab.eos_ids():
        gen["eos_token_id"] = ids if len(ids) > 1 else ids[0]
    return gen


def _model_config(reader, fields: dict[str, Any], dtype: str):
    """(arch, plan, vocab, config.json contents): shared by full and tokenizer-only imports."""
    arch, plan = _plan(reader, fields)  # first: an unsupported architecture is named as such
    vocab = GGUFVocab(fields)
    config = dict(plan.config)
    config["torch_dtype"] = dtype
    if vocab.bos is not None:
        config["bos_token_id"] = vocab.bos
    if ids := vocab.eos_ids():
        config["eos_token_id"] = ids if len(ids) > 1 else ids[0]
    return arch, plan, vocab, config


def _write_configs(out: Path, config: dict, fields: dict[str, Any], vocab: GGUFVocab) -> None:
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps(_generation_config(fields, vocab), indent=2))


def write_model_dir(gguf_path: Path, out: Path, dtype: str) -> dict:
    """Convert one GGUF into `out` (which must exist and be empty)."""
    import gguf
    reader = gguf.GGUFReader(str(gguf_path))
    fields = read_fields(reader)
    arch, plan, vocab, config = _model_config(reader, fields, dtype)

    jobs = [(t, plan.hf_name(t.name)) for t in reader.tensors]
    jobs = [(t, n) for t, n in jobs if n is not None]
    entries = [(n, _numpy_shape(t), dtype) for t, n in jobs]
    _check_against_mlx(config, entries)

    log(f"converting {gguf_path.name} ({arch}, {len(jobs)} tensors) to {dtype}")
    write_tokenizer(vocab, out)  # first: a vocab problem fails fast
    stream = SafetensorsStream(out / "model.safetensors", entries)
    bar = Progress("convert tensors", len(jobs))
    try:
        for tensor, name in jobs:
            w = plan.transform(tensor.name, dequantize(tensor))
            stream.write(name, _to_dtype(w, dtype))
            del w  # one tensor in memory at a time
            bar.advance()
    finally:
        stream.close()
        bar.close()
    _write_configs(out, config, fields, vocab)
    return config


def _minimal_config(fields: dict[str, Any], arch: str, vocab: GGUFVocab) -> dict:
    config: dict[str, Any] = {"model_type": arch, "vocab_size": len(vocab.tokens)}
    if ctx := fields.get(f"{arch}.context_length"):
        config["max_position_embeddings"] = int(ctx)
    if ids := vocab.eos_ids():
        config["eos_token_id"] = ids if len(ids) > 1 else ids[0]
    return config


# Bumped when the tokenizer files change (2: fallback chat templates); older caches are refreshed.
TOKENIZER_FORMAT = 2


def _refresh_tokenizer(gguf_path: Path, cached: Path) -> None:
    """Rewrites a cached conversion's tokenizer and configs if an older converter wrote them."""
    meta_path = cached / "pensieve_source.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        meta = {}
    if meta.get("tokenizer_format", 1) >= TOKENIZER_FORMAT:
        return
    import gguf
    fields = read_fields(gguf.GGUFReader(str(gguf_path)))
    vocab = GGUFVocab(fields)
    config = json.loads((cached / "config.json").read_text())
    if ids := vocab.eos_ids():
        config["eos_token_id"] = ids if len(ids) > 1 else ids[0]
    log(f"refreshing the tokenizer files of {cached.name}")
    write_tokenizer(vocab, cached)
    _write_configs(cached, config, fields, vocab)
    meta_path.write_text(json.dumps({**meta, "tokenizer_format": TOKENIZER_FORMAT}, indent=2))


def write_tokenizer_dir(gguf_path: Path, out: Path) -> dict:
    """Tokenizer files, config.json and generation_config.json only: no tensor is read.

    What an engine that runs the GGUF itself (llama.cpp) needs beside it for chat
    templates, token counts and tool-call parsing.
    """
    import gguf
    reader = gguf.GGUFReader(str(gguf_path))
    fields = read_fields(reader)
    vocab = GGUFVocab(fields)
    try:
        arch, _p, _v, config = _model_config(reader, fields, "float16")
    except (ValueError, KeyError) as e:
        # llama.cpp runs architectures MLX's mapping lacks; the tokenizer needs none.
        arch = fields.get("general.architecture") or "unknown"
        log(f"note: no MLX config for {arch} ({e}); writing a minimal config.json")
        config = _minimal_config(fields, arch, vocab)
    log(f"writing the tokenizer of {gguf_path.name} ({arch})")
    write_tokenizer(vocab, out)
    _write_configs(out, config, fields, vocab)
    return config


def _quantize_dir(src: Path, dst: Path, bits: int) -> None:
    """mlx_lm's own quantization of a converted directory (group size 64)."""
    from mlx_lm.utils import load, quantize_model, save_config, save_model
    model, tokenizer, config = load(str(src), return_config=True)
    with contextlib.redirect_stdout(sys.stderr):  # mlx_lm prints; stdout is ours
        model, config = quantize_model(model, config, group_size=64, bits=bits)
    save_model(dst, model, donate_model=True)
    save_config(config, config_path=dst / "config.json")
    for f in src.iterdir():
        if f.name not in ("config.json",) and not f.name.endswith(".safetensors"):
            shutil.copy2(f, dst / f.name)


def convert(gguf_path: Path, out_root: Optional[Path] = None, dtype: Optional[str] = None,
            quantize: Optional[int] = None, name: Optional[str] = None,
            tokenizer_only: bool = False) -> Path:
    """Return the MLX directory for `gguf_path`, converting it on first use.

    tokenizer_only: a directory with the tokenizer and configs but no weights
    (keyed `<sha>-<name>-tokenizer`), for engines that run the GGUF itself.
    """
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"no such GGUF file: {gguf_path}")
    dtype = dtype or default_dtype()
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}")
    if quantize not in (None, 4, 8):
        raise ValueError("quantize must be 4 or 8")
    out_root = Path(out_root or default_out_root()).expanduser()
    out_root.mkdir(parents=True, exist_ok=True)
    sha = file_sha256(gguf_path, out_root)
    final = out_root / cache_dir_name(sha, name or gguf_path.stem, dtype, quantize, tokenizer_only)
    if cached := find_cached(out_root, final.name):
        log(f"using cached conversion {cached}")
        _refresh_tokenizer(gguf_path, cached)
        return cached
    work = out_root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        base = work / "base"
        base.mkdir(parents=True)
        if tokenizer_only:
            write_tokenizer_dir(gguf_path, base)
        else:
            write_model_dir(gguf_path, base, "float16" if quantize else dtype)
        if quantize and not tokenizer_only:
            (work / "q").mkdir()
            _quantize_dir(base, work / "q", quantize)
            base = work / "q"
        (base / "pensieve_source.json").write_text(json.dumps(
            {"gguf": str(gguf_path.resolve()), "sha256": sha,
             "dtype": None if tokenizer_only else dtype,
             "quantize": None if tokenizer_only else quantize,
             "tokenizer_only": tokenizer_only, "tokenizer_format": TOKENIZER_FORMAT}, indent=2))
        try:
            os.rename(base, final)  # atomic publish
        except OSError:
            if not (final / "config.json").is_file():  # lost a race: fine
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


if __name__ == "__main__":  # pragma: no cover
    print(convert(Path(sys.argv[1])))
