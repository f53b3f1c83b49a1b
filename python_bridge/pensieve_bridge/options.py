"""The `load` command's options, read and checked in one place.

The server's config.ts holds every tuning default and always sends these values; the worker
requires each of them (a load without one is a bad_request naming it). Only what depends on
the model (context_length, prefill_step_size) or on the request's kind (engine, tokenizer,
warmup) may be left out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

# Light imports only: mlx_inference.py reads REQUIRED before its streams are set up.
from .errors import bad_request
from .llama.fields import engine_fields
from .sampling import read_defaults

if TYPE_CHECKING:
    from .model import LoadedModel

# (field, integer?, lowest, highest): the values every load must carry.
REQUIRED: tuple[tuple[str, bool, float, Optional[float]], ...] = (
    ("cache_limit_gb", False, 0, None),
    ("prompt_cache_entries", True, 0, None),
    ("prompt_cache_gb", False, 0, None),
    ("max_batch", True, 1, None),
    ("max_output_tokens", True, 1, None),
    ("loop_guard_tokens", True, 0, None),
    ("coalesce_ms", False, 0, 60_000),
)


@dataclass(frozen=True)
class LoadOptions:
    model: str
    cache_limit_gb: float  # MLX buffer cache limit (mx.set_cache_limit)
    prompt_cache_entries: int  # 0 disables the prompt-prefix cache
    prompt_cache_gb: float
    max_batch: int  # 1 turns batching off
    max_output_tokens: int  # most tokens one generation may produce
    loop_guard_tokens: int  # 0 disables the loop guard (loops.py)
    coalesce_ms: float  # text events closer together are joined (coalesce.py)
    context_length: Optional[int]  # None: the model's own
    prefill_step_size: Optional[int]  # None: the engine's own
    warmup: bool
    engine: str  # "mlx" | "llama"
    tokenizer: Optional[str]  # llama: the Hugging Face tokenizer directory


def _required(msg: dict, key: str, integer: bool, lo: float, hi: Optional[float]) -> Any:
    if key not in msg or msg[key] is None:
        raise bad_request(f"load needs {key}")
    val = msg[key]
    kinds = int if integer else (int, float)
    if isinstance(val, bool) or not isinstance(val, kinds) or val < lo or (hi is not None and val > hi):
        what = "an integer" if integer else "a number"
        raise bad_request(f"{key} must be {what} " + (f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"))
    return val if integer else float(val)


def load_options(msg: dict) -> LoadOptions:
    """The options of a load command; raises bad_request on a missing or bad field."""
    name = msg.get("model")
    if not isinstance(name, str) or not name:
        raise bad_request("load needs a model (path or Hugging Face id)")
    values = {key: _required(msg, key, *spec) for key, *spec in REQUIRED}
    for key in ("context_length", "prefill_step_size"):
        val = msg.get(key)
        if val is not None and (isinstance(val, bool) or not isinstance(val, int) or val < 1):
            raise bad_request(f"{key} must be an integer >= 1")
    warmup = msg.get("warmup", True)
    if not isinstance(warmup, bool):
        raise bad_request("warmup must be a boolean")
    engine, tokenizer = engine_fields(msg)
    return LoadOptions(model=name, **values, context_length=msg.get("context_length"),
                       prefill_step_size=msg.get("prefill_step_size"), warmup=warmup,
                       engine=engine, tokenizer=tokenizer)


def configure(lm: "LoadedModel", opts: LoadOptions) -> None:
    """What generations of the loaded model follow: coalescing, output cap, loop guard and
    sampling defaults (the last three also in `loaded`)."""
    lm.delta_window_s = opts.coalesce_ms / 1000
    # A llama model's generation_config.json sits in its tokenizer directory.
    lm.sampling = read_defaults([opts.tokenizer or lm.info.get("tokenizer"), opts.model])
    own = lm.sampling.pop("max_new_tokens", None)
    cap = opts.max_output_tokens
    lm.max_output_tokens = min(cap, own) if isinstance(own, int) and own > 0 else cap
    # Random weights loop by nature; the guard is for real models that degenerate.
    lm.loop_span = 0 if lm.info.get("demo") else opts.loop_guard_tokens
    lm.info.update(sampling_defaults=dict(lm.sampling), max_output_tokens=lm.max_output_tokens,
                   loop_guard_tokens=lm.loop_span)
