"""`load` with engine "llama": a GGUF on llama.cpp, its Hugging Face tokenizer beside it.

The prompt is rendered and tokenized in Python by the tokenizer directory (tokenizer.json,
tokenizer_config.json with the chat template, config.json, generation_config.json; written
from the GGUF by `python -m pensieve_bridge.gguf import FILE --tokenizer-only`, so its ids are
the GGUF vocab's ids). mlx_lm's tokenizer loader sets it up exactly as on the MLX path: same
detokenizer, tool-call and think markers, so everything after the token ids is shared.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

from ..model import LoadedModel
from ..prompt_cache import GB
from ..toolcalls import format_for
from .engine import EngineConfig, LlamaEngine
from .prompt_cache import SeqCache

MAX_DEFAULT_CONTEXT = 32768  # KV for the whole trained context of big models would not fit
_UNQUANTIZED = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def tokenizer_dir(gguf: Path, tokenizer: Optional[str]) -> Path:
    """The `tokenizer` load field, else the cached tokenizer-only import of the GGUF."""
    if tokenizer:
        path = Path(tokenizer).expanduser()
        if not (path / "tokenizer_config.json").is_file():
            raise FileNotFoundError(f"tokenizer {tokenizer} has no tokenizer_config.json")
        return path
    from ..gguf.convert import convert

    _log(f"[worker] no tokenizer given for {gguf.name}: importing it (--tokenizer-only)")
    return convert(gguf, tokenizer_only=True)


def load_tokenizer(path: Path):
    """(TokenizerWrapper, config) exactly as mlx_lm.load sets the tokenizer up."""
    from mlx_lm.utils import load_config, load_tokenizer as mlx_load_tokenizer

    config = load_config(path)
    tok = mlx_load_tokenizer(path, None, eos_token_ids=config.get("eos_token_id", None))
    return tok, config


def load_llama_model(name: str, tokenizer: Optional[str], context_length: Optional[int],
                     prefill_step_size: Optional[int], prompt_cache_entries: int,
                     prompt_cache_gb: float) -> LoadedModel:
    gguf = Path(name).expanduser()
    if not gguf.is_file():
        raise FileNotFoundError(f"engine llama needs a .gguf file; {name} is not a file")
    t0 = time.perf_counter()
    tok_dir = tokenizer_dir(gguf, tokenizer)
    tok, config = load_tokenizer(tok_dir)
    probe_ctx = int(context_length) if context_length else None
    engine = _engine(gguf, probe_ctx, prefill_step_size)
    lm = LoadedModel(
        name=name, model=engine, tokenizer=tok, config=config,
        context_length=probe_ctx or engine.n_ctx,
        prefill_step_size=engine.n_batch, load_seconds=time.perf_counter() - t0,
        tool_format=format_for(tok),
        prompt_cache=SeqCache(engine, prompt_cache_entries, prompt_cache_gb * GB),
    )
    if getattr(tok, "has_thinking", False):
        lm.think = (tok.think_start, tok.think_end)
    lm.info = describe(lm, gguf, tok_dir)
    lm.info["template"] = lm.dialect()
    return lm


def _engine(gguf: Path, context_length: Optional[int], step: Optional[int]) -> LlamaEngine:
    # n_ctx 0: the engine takes min(the GGUF's trained context, MAX_DEFAULT_CONTEXT). One
    # sequence: SeqCache keeps other conversations outside the context.
    cfg = EngineConfig(n_ctx=context_length or 0, max_ctx=MAX_DEFAULT_CONTEXT)
    if step:
        cfg.n_ubatch = int(step)  # one prefill chunk per step = one llama.cpp ubatch
    return LlamaEngine(str(gguf), cfg)


def describe(lm: LoadedModel, gguf: Path, tok_dir: Path) -> dict:
    """The `loaded` reply's facts: the MLX keys (model.describe) plus engine/backend."""
    eng: LlamaEngine = lm.model
    quant = eng.quantization()
    cfg = lm.config
    backend = eng.backend()
    backend["quantization"] = quant
    return {
        "model": lm.name,
        "path": str(gguf.resolve()),
        "tokenizer": str(tok_dir.resolve()),
        "model_type": cfg.get("model_type") or eng.meta("general.architecture"),
        "context_length": lm.context_length,
        "vocab_size": eng.n_vocab,
        "supports_vision": False,
        "kv_bytes_per_token": eng.kv_bytes_per_token(),
        "has_tool_calling": lm.tool_format is not None,
        "has_thinking": lm.think is not None,
        "tool_parser": lm.tool_format.name if lm.tool_format else None,
        "max_concurrency": 1,
        "prompt_cache_entries": lm.prompt_cache.max_entries,
        "prompt_cache_gb": lm.prompt_cache.max_bytes / GB,
        "demo": False,
        "load_seconds": round(lm.load_seconds, 3),
        "engine": "llama",
        "device": "gpu" if sys.platform == "darwin" and "metal" in str(eng.lib.dir).lower() else "cpu",
        "blas": _blas_line(backend),
        "dtype": _UNQUANTIZED.get(quant),
        "quantization": None if quant in _UNQUANTIZED else quant,
        "backend": backend,
    }


def _blas_line(b: dict) -> str:
    variant = f" {b['cpu_variant']}" if b.get("cpu_variant") else ""
    return f"llama.cpp {b['version']} (cpu{variant}, {b['threads']} threads)"
