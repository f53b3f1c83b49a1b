"""A lone generation on mlx-lm's `stream_generate`, advanced one token per `step()`.

A stepper of generation.Generation, which owns everything but producing tokens.
stream_generate is a Python generator, so the worker's loop can step it between
its other work: answering commands, and stepping the batch that requests which
arrive meanwhile join (batch.py). Its first step is the whole prefill: the
progress hook answers only immediate commands (cancel, stats, ...) meanwhile.
Alone, it is faster per token than a BatchGenerator holding one sequence; once
others join, `hand_off()` lets the batch continue it (batch.adopt), so each step
is one forward pass for all.
"""

from __future__ import annotations

import time

from .constrain import processors
from .generation import Generation, Host, Stepper
from .model import LoadedModel
from .prompt_cache import cache_length
from .sampling import logits_processors


class _Cancelled(Exception):
    """Raised from the prefill callback to abandon a cancelled prompt."""


class Solo(Stepper):
    """One generate: the constructor admits it (sends `started`), `step()` runs it."""

    def __init__(self, host: Host, lm: LoadedModel, msg: dict):
        """Renders and admits; raises WorkerError (nothing sent) when it cannot start."""
        import mlx.core as mx
        from mlx_lm import stream_generate
        from mlx_lm.models.cache import make_prompt_cache
        from mlx_lm.sample_utils import make_sampler

        self.lm = lm
        self.gen = g = Generation(host, lm, msg, "solo")
        p, ids = g.params, g.ids
        cache, cached = lm.prompt_cache.fetch(ids)
        if cache is None:
            cache = make_prompt_cache(lm.model)  # ours, so it can be kept for the next prompt
        self.cache = cache
        self.generated: list[int] = []
        sampler = make_sampler(temp=p.temperature, top_p=p.top_p, top_k=p.top_k)
        g.start(cached)
        if g.seeded:
            mx.random.seed(p.seed)
        # A generator: nothing runs until the first step. On Metal, stream_generate
        # wires the model's memory for the generation; the CPU build skips that.
        self.stream = stream_generate(lm.model, lm.tokenizer, mx.array(ids[cached:]),
                                      max_tokens=g.max_tokens, sampler=sampler,
                                      logits_processors=logits_processors(p.repetition_penalty)
                                      + processors(g.constraint, len(ids) - cached),
                                      prompt_progress_callback=self._on_progress,
                                      prefill_step_size=lm.prefill_step_size,
                                      prompt_cache=cache)

    def _on_progress(self, processed: int, total: int) -> None:
        g = self.gen
        # stream_generate counts only the uncached rest; report the whole prompt.
        g.progress(processed + g.cached)
        # A long prefill still answers cancel/stats/...; a generate waits for the loop.
        g.host.answer_immediate()
        if g.cancelled:
            raise _Cancelled()

    def _advance(self) -> bool:
        g = self.gen
        try:
            resp = next(self.stream)
        except StopIteration:  # the stream ended without a final response
            return self._end(None)
        except _Cancelled:
            return self._end("cancelled")
        self.generated.append(int(resp.token))
        looping = g.token(resp.token)
        # resp.finish_reason: "stop" (EOS) or "length", else None.
        finish = g.settle(resp.text, resp.finish_reason, looping, time.perf_counter())
        return False if finish is None else self._end(finish)

    def hand_off(self) -> bool:
        """Stops the stream so the batch can continue this generation (batch.adopt).

        After its last token was yielded, stream_generate has already fed that token to
        the model: the cache is trimmed by one so the batch feeds it again and samples
        what follows. False (nothing changed) when that cannot be done exactly."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        if self.gen.cancelled or not self.generated or not can_trim_prompt_cache(self.cache):
            return False
        if cache_length(self.cache) != len(self.gen.ids) + len(self.generated):
            return False
        self.stream.close()
        trim_prompt_cache(self.cache, 1)
        return True

    def _keep(self) -> int:
        self.stream.close()
        return keep_cache(self.lm, self.gen.ids + self.generated, self.cache)

    def _abandon(self) -> None:
        self.stream.close()


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

