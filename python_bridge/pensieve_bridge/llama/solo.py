"""A lone generation on llama.cpp, advanced one prefill chunk or one token per `step()`.

A stepper of generation.Generation, like solo.Solo (the MLX path), so events, text, tool
calls, stop handling and `done` are the same: `started` from the constructor, a `progress`
per prefill chunk (the worker loop answers cancel and stats between steps), then a token per
step. Tokens are detokenized by the model's Hugging Face detokenizer, as on the MLX path.
"""

from __future__ import annotations

import time

from ..generation import Generation, Host, Stepper
from ..model import LoadedModel
from .abort import watch_for
from .engine import Aborted


class LlamaSolo(Stepper):
    """One generate on the llama engine; the worker loop steps it like solo.Solo."""

    def __init__(self, host: Host, lm: LoadedModel, msg: dict):
        """Renders and admits; raises WorkerError (nothing sent) when it cannot start."""
        self.lm, self.eng, self.cache = lm, lm.model, lm.prompt_cache
        self.gen = g = Generation(host, lm, msg, "solo")
        p = g.params
        self.generated: list[int] = []
        self.detok = lm.tokenizer.detokenizer
        self.detok.reset()
        self.eos = set(lm.tokenizer.eos_token_ids)
        self.sampler = self.eng.sampler(p.temperature, p.top_p, p.top_k, p.repetition_penalty,
                                        p.seed, g.ids)
        self._closed = False
        self.watch = watch_for(host, g.id)  # a cancel stops a prefill chunk midway
        # Last: from here on the sequence is this generation's until _close.
        self.seq, cached = self.cache.acquire(g.ids)
        self.held = cached  # tokens of ids + generated in the sequence's KV
        g.start(cached)

    def _advance(self) -> bool:
        if self.held < self.gen.n_prompt:
            return self._prefill_chunk()
        return self._next_token()

    # -- prefill and decode ------------------------------------------------------------

    def _prefill_chunk(self) -> bool:
        g = self.gen
        g.progress(self.held)
        start = self.held
        chunk = g.ids[start:start + self.lm.prefill_step_size]
        last = start + len(chunk) == g.n_prompt
        try:
            self._decode(chunk, start, want_logits=last, watch=self.watch)
        except Aborted:
            # Cells of the aborted chunk may remain: the sequence keeps only what we know.
            self.eng.seq_rm(self.seq, self.held, -1)
            return False  # the loop answers the cancel now; the next step ends us
        self.held += len(chunk)
        if not last:
            g.progress(self.held)
            return False
        return self._sample_and_emit()  # the first token, then progress == total

    def _next_token(self) -> bool:
        # The last sampled token is fed now; its KV joins the sequence.
        self._decode([self.generated[-1]], self.held, want_logits=True)
        self.held += 1
        return self._sample_and_emit()

    def _decode(self, tokens: list[int], pos0: int, want_logits: bool, watch=None) -> None:
        # The context holds this generation alone (kept ones are saved outside it), so a
        # NoKVSlot means the context itself is full: it fails the generation.
        if watch is not None:
            watch.reset()
        self.eng.decode(tokens, self.seq, pos0, want_logits,
                        watch.callback if watch is not None else None)

    def _sample_and_emit(self) -> bool:
        g, constraint = self.gen, self.gen.constraint
        if constraint is not None:
            self.eng.mask_logits(constraint.allowed())
        tok = self.sampler.sample()
        if constraint is not None:
            constraint.advance(tok)
        if not self.generated:
            g.progress(g.n_prompt)
        self.generated.append(tok)
        looping = g.token(tok)
        eos = tok in self.eos or self.eng.is_eog(tok)
        if not eos:
            self.detok.add_token(tok)
        # As stream_generate: "stop" (EOS) or "length" end it; else it goes on.
        final = "stop" if eos else "length" if g.completion >= g.max_tokens else None
        if final is not None:
            self.detok.finalize()
        finish = g.settle(self.detok.last_segment, final, looping, time.perf_counter())
        return False if finish is None else self._end(finish)

    # -- the end -----------------------------------------------------------------------

    def _keep(self) -> int:
        return self._close(keep=True)

    def _abandon(self) -> None:
        self._close(keep=False)

    def _close(self, keep: bool) -> int:
        """Frees the sampler and returns the sequence to the cache; tokens stored."""
        if self._closed:
            return 0
        self._closed = True
        self.sampler.free()
        if not keep:
            self.cache.discard(self.seq)
            return 0
        return self.cache.release(self.seq, (self.gen.ids + self.generated)[:self.held])
