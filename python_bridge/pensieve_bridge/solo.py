"""A lone generation on mlx-lm's `stream_generate`, advanced one token per `step()`.

stream_generate is a Python generator, so the worker's loop can step it between
its other work: answering commands, and stepping the batch that requests which
arrive meanwhile join (batch.py). Alone, it is faster per token than a
BatchGenerator holding one sequence; once others join, `hand_off()` lets the
batch continue it (batch.adopt), so each step is one forward pass for all.
"""

from __future__ import annotations

import time
from typing import Any

from . import faults
from .admission import admit, settle_step
from .constrain import processors
from .generation import Host, created_tokens, prompt_cache_for
from .model import LoadedModel
from .prompt_cache import cache_length
from .sampling import logits_processors


class _Cancelled(Exception):
    """Raised from the prefill callback to abandon a cancelled prompt."""


class Solo:
    """One generate: the constructor admits it (sends `started`), `step()` runs it.

    `cancelled` may be set by the loop (or by a poll during prefill) at any time.
    """

    def __init__(self, host: Host, lm: LoadedModel, msg: dict):
        """Renders and admits; raises WorkerError (nothing sent) when it cannot start."""
        import mlx.core as mx
        from mlx_lm import stream_generate
        from mlx_lm.models.cache import make_prompt_cache
        from mlx_lm.sample_utils import make_sampler

        self.host, self.lm = host, lm
        self.id = gid = msg["id"]
        self.cancelled = False
        self.admission = a = admit(host, lm, msg)
        p, ids, n_prompt = a.params, a.ids, a.n_prompt
        self.params, self.seeded = p, p.seed is not None
        self.constraint, self.loop, self.breakpoint = a.constraint, a.loop, a.breakpoint
        self.max_tokens = max_tokens = a.max_tokens
        cache, cached = prompt_cache_for(lm, ids)
        if cache is None:
            cache = make_prompt_cache(lm.model)  # ours, so it can be kept for the next prompt
        self.ids, self.cache, self.cached, self.n_prompt = ids, cache, cached, n_prompt
        self.output, self.coal = a.output, a.coal
        self.generated: list[int] = []
        self.completion, self.tps = 0, 0.0
        self._last_progress = -1
        sampler = make_sampler(temp=p.temperature, top_p=p.top_p, top_k=p.top_k)
        host.send({"type": "started", "id": gid, "prompt_tokens": n_prompt, "cached_tokens": cached})
        if self.seeded:
            mx.random.seed(p.seed)
        self.t0 = time.perf_counter()
        # A generator: nothing runs until the first step. On Metal, stream_generate
        # wires the model's memory for the generation; the CPU build skips that.
        self.stream = stream_generate(lm.model, lm.tokenizer, mx.array(ids[cached:]),
                                      max_tokens=max_tokens, sampler=sampler,
                                      logits_processors=logits_processors(p.repetition_penalty)
                                      + processors(self.constraint, len(ids) - cached),
                                      prompt_progress_callback=self._on_progress,
                                      prefill_step_size=lm.prefill_step_size,
                                      prompt_cache=cache)

    def _on_progress(self, processed: int, total: int) -> None:
        # stream_generate counts only the uncached rest; report the whole prompt.
        processed, total = processed + self.cached, total + self.cached
        if processed != self._last_progress:
            self._last_progress = processed
            self.host.send({"type": "progress", "id": self.id, "processed": int(processed),
                            "total": int(total)})
        self.host.poll()  # a long prefill still answers cancel/stats/... between chunks
        if self.cancelled:
            raise _Cancelled()

    def step(self) -> bool:
        """Prefill (first call) or one token; True once ended with its `done` sent.

        Raises on failure (text already released is sent first; no done)."""
        if self.cancelled:
            return self._end("cancelled")
        try:
            return self._advance()
        except _Cancelled:
            return self._end("cancelled")
        except BaseException:
            self.coal.flush(self.host.send)  # text already streamed comes before the error
            self.stream.close()
            raise

    def _advance(self) -> bool:
        try:
            resp = next(self.stream)
        except StopIteration:  # the stream ended without a final response
            return self._end(None)
        self.completion, self.tps = resp.generation_tokens, resp.generation_tps
        self.generated.append(int(resp.token))
        looping = self.loop.push(resp.token)
        if self.completion == 1:
            faults.after_first_token()
        # resp.finish_reason: "stop" (EOS) or "length", else None.
        finish = settle_step(self.admission, self.host.send, self.host.log, resp.text,
                             resp.finish_reason, looping, time.perf_counter())
        return False if finish is None else self._end(finish)

    def hand_off(self) -> bool:
        """Stops the stream so the batch can continue this generation (batch.adopt).

        After its last token was yielded, stream_generate has already fed that token to
        the model: the cache is trimmed by one so the batch feeds it again and samples
        what follows. False (nothing changed) when that cannot be done exactly."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        if self.cancelled or not self.generated or not can_trim_prompt_cache(self.cache):
            return False
        if cache_length(self.cache) != len(self.ids) + len(self.generated):
            return False
        self.stream.close()
        trim_prompt_cache(self.cache, 1)
        return True

    def _end(self, finish: Any) -> bool:
        self.stream.close()
        if finish is None:
            finish = "cancelled" if self.cancelled else "length"
            if finish == "length":
                self.coal.push(self.host.send, self.output.finish(), time.perf_counter())
        # On cancel, text held back as a possible stop/marker is dropped; coalesced text is sent.
        self.coal.flush(self.host.send)
        if finish == "stop" and self.output.calls > 0:
            finish = "tool_calls"
        stored = keep_cache(self.lm, self.ids + self.generated, self.cache)
        n_prompt, cached = self.n_prompt, self.cached
        self.host.send({"type": "done", "id": self.id, "finish_reason": finish,
                        "stop_sequence": self.output.matched if finish == "stop_sequence" else None,
                        "prompt_tokens": n_prompt, "completion_tokens": int(self.completion),
                        "cached_tokens": cached,
                        "cache_created_tokens": created_tokens(stored, self.breakpoint, cached)})
        self.host.log(f"[worker] generate id={self.id} finish={finish} prompt_tokens={n_prompt} "
                      f"completion_tokens={self.completion} path=solo gen_tps={self.tps:.1f} "
                      f"seconds={time.perf_counter() - self.t0:.3f}")
        return True


def keep_cache(lm: LoadedModel, tokens: list[int], cache: list) -> int:
    """Stores the generation's KV cache under the tokens it really holds.

    Returns how many tokens the stored entry holds (0 when nothing was kept)."""
    from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

    held = cache_length(cache)
    if held is None:
        return 0  # unknown contents: never risk reusing a wrong cache
    if held > len(tokens):  # a step computed past the last token we saw
        if not can_trim_prompt_cache(cache):
            return 0
        trim_prompt_cache(cache, held - len(tokens))
        held = len(tokens)
    return held if lm.prompt_cache.store(tokens[:held], cache) else 0


def run_to_end(solo: Solo) -> None:
    """Steps a solo generation until it ends (the warm-up; no loop around it)."""
    while not solo.step():
        pass
