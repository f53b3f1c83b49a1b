"""One tiny generation right after load, so the first real request is not the slow one.

The first generation pays one-off costs: MLX builds its kernels (on the CPU
build, compiled functions such as the sampler become native code), transformers
compiles the chat template, the tokenizer and detokenizer warm their caches.
Running them at load puts that time, and the memory it keeps, into the load.
"""

from __future__ import annotations

import time
import traceback
from typing import Optional

from . import faults
from .batch import Batch
from .generation import run_to_end
from .model import LoadedModel
from .prompt_cache import PromptCache
from .solo import Solo

WARMUP_ID = "warmup"
WARMUP_TOKENS = 4
WARMUP_MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
                   {"role": "user", "content": "Hello, how are you?"}]


class _Quiet:
    """A Host that discards the warm-up's events and log lines."""

    def send(self, msg: dict) -> None:
        pass

    def answer_immediate(self) -> None:
        pass

    def log(self, line: str) -> None:
        pass


def is_llama(lm: Optional[LoadedModel]) -> bool:
    """A model on the llama.cpp engine (llama/), not MLX."""
    return lm is not None and lm.info.get("engine") == "llama"


def _run_solo(host: _Quiet, lm: LoadedModel, msg: dict) -> None:
    if is_llama(lm):
        # llama.cpp: the first decode sizes its compute buffers and repacks weights.
        from .llama.prompt_cache import SeqCache
        from .llama.solo import LlamaSolo

        kept, lm.prompt_cache = lm.prompt_cache, SeqCache(lm.model, 0, 0)
        try:
            run_to_end(LlamaSolo(host, lm, msg))
        finally:
            lm.prompt_cache = kept
        return
    run_to_end(Solo(host, lm, msg))


def warm_up(lm: LoadedModel, batch: Optional[Batch], log) -> Optional[float]:
    """Runs the warm-up on the paths real requests take; seconds, or None if it failed.

    A lone request runs solo (stream_generate); with a batch, concurrent ones are
    batched, so both paths are warmed."""
    host = _Quiet()
    msg = {"id": WARMUP_ID, "messages": WARMUP_MESSAGES, "max_tokens": WARMUP_TOKENS,
           "temperature": 0}
    # A disabled cache for the duration: nothing stored, no hit/miss counted.
    kept, lm.prompt_cache = lm.prompt_cache, PromptCache(0, 0)
    t0 = time.perf_counter()
    try:
        with faults.suspended():
            _run_solo(host, lm, msg)
            if batch is not None:
                batch.admit(host, msg)
                while batch.busy:
                    batch.step(host)
        return time.perf_counter() - t0
    except Exception:  # noqa: BLE001 - a failed warm-up must not fail the load
        log(f"[worker] warm-up failed (the model stays loaded):\n{traceback.format_exc()}")
        if batch is not None:
            batch.fail_all(host, {"type": "error"})  # a fresh generator, nothing left in it
        return None
    finally:
        lm.prompt_cache = kept
