"""A lone generation on llama.cpp, advanced one prefill chunk or one token per `step()`.

Mirrors solo.Solo (the MLX path) event for event: `started` from the constructor, a
`progress` per prefill chunk (the worker loop polls between steps, so cancel and stats
are answered between chunks), then text through the same TextOutput, Coalescer,
LoopGuard and stop handling, and the same `done` fields. Tokens are detokenized by the
model's Hugging Face detokenizer, so text and tool calls match the MLX path.
"""

from __future__ import annotations

import time
from typing import Any

from .. import faults
from ..admission import admit, settle_step
from ..generation import Host, created_tokens
from ..model import LoadedModel
from .abort import watch_for
from .engine import Aborted, NoKVSlot


class LlamaSolo:
    """One generate on the llama engine; same interface as solo.Solo for the worker loop."""

    def __init__(self, host: Host, lm: LoadedModel, msg: dict):
        """Renders and admits; raises WorkerError (nothing sent) when it cannot start."""
        self.host, self.lm = host, lm
        self.eng, self.cache = lm.model, lm.prompt_cache
        self.id = gid = msg["id"]
        self.cancelled = False
        self.admission = a = admit(host, lm, msg)
        p, ids, n_prompt = a.params, a.ids, a.n_prompt
        self.params, self.seeded = p, p.seed is not None
        self.constraint, self.loop, self.breakpoint = a.constraint, a.loop, a.breakpoint
        self.max_tokens, self.ids, self.n_prompt = a.max_tokens, ids, n_prompt
        self.output, self.coal = a.output, a.coal
        self.generated: list[int] = []
        self.completion, self.tps = 0, 0.0
        self.detok = lm.tokenizer.detokenizer
        self.detok.reset()
        self.eos = set(lm.tokenizer.eos_token_ids)
        self.sampler = self.eng.sampler(p.temperature, p.top_p, p.top_k, p.repetition_penalty,
                                        p.seed, ids)
        self._last_progress = -1
        self._done = False
        self.watch = watch_for(host, gid)  # a cancel stops a prefill chunk midway
        # Last: from here on the sequence is this generation's until _close.
        self.seq, cached = self.cache.acquire(ids)
        self.cached = self.held = cached  # held: tokens of ids + generated in the sequence's KV
        host.send({"type": "started", "id": gid, "prompt_tokens": n_prompt, "cached_tokens": cached})
        self.t0 = time.perf_counter()
        self.t_first = None

    # -- the loop's interface ----------------------------------------------------

    def step(self) -> bool:
        """One prefill chunk, or one token; True once ended with its `done` sent.

        Raises on failure (text already released is sent first; no done)."""
        if self.cancelled:
            return self._end("cancelled")
        try:
            if self.held < self.n_prompt:
                return self._prefill_chunk()
            return self._next_token()
        except BaseException:
            self.coal.flush(self.host.send)  # text already streamed comes before the error
            self._close(keep=False)
            raise

    def hand_off(self) -> bool:
        return False  # llama generations are not batched (max_concurrency 1)

    # -- prefill and decode ------------------------------------------------------------

    def _progress(self, processed: int) -> None:
        if processed != self._last_progress:
            self._last_progress = processed
            self.host.send({"type": "progress", "id": self.id, "processed": int(processed),
                            "total": int(self.n_prompt)})

    def _prefill_chunk(self) -> bool:
        self._progress(self.held)
        start = self.held
        chunk = self.ids[start:start + self.lm.prefill_step_size]
        last = start + len(chunk) == self.n_prompt
        try:
            self._decode(chunk, start, want_logits=last, watch=self.watch)
        except Aborted:
            # Cells of the aborted chunk may remain: the sequence keeps only what we know.
            self.eng.seq_rm(self.seq, self.held, -1)
            return False  # the loop answers the cancel now; the next step ends us
        self.held += len(chunk)
        if not last:
            self._progress(self.held)
            return False
        return self._sample_and_emit()  # the first token, then progress == total

    def _next_token(self) -> bool:
        # The last sampled token is fed now; its KV joins the sequence.
        self._decode([self.generated[-1]], self.held, want_logits=True)
        self.held += 1
        return self._sample_and_emit()

    def _decode(self, tokens: list[int], pos0: int, want_logits: bool, watch=None) -> None:
        while True:
            if watch is not None:
                watch.reset()
            try:
                return self.eng.decode(tokens, self.seq, pos0, want_logits,
                                       watch.callback if watch is not None else None)
            except NoKVSlot:
                # Kept conversations fill the shared cells: the oldest go first.
                if not self.cache.make_room():
                    raise

    def _sample_and_emit(self) -> bool:
        if self.constraint is not None:
            self.eng.mask_logits(self.constraint.allowed())
        tok = self.sampler.sample()
        if self.constraint is not None:
            self.constraint.advance(tok)
        if self.t_first is None:
            self.t_first = time.perf_counter()
            self._progress(self.n_prompt)
        self.generated.append(tok)
        self.completion = n = len(self.generated)
        self.tps = (n - 1) / max(1e-9, time.perf_counter() - self.t_first) if n > 1 else 0.0
        looping = self.loop.push(tok)
        if n == 1:
            faults.after_first_token()
        eos = tok in self.eos or self.eng.is_eog(tok)
        if not eos:
            self.detok.add_token(tok)
        # As stream_generate: "stop" (EOS) or "length" end it; else it goes on.
        final = "stop" if eos else "length" if n >= self.max_tokens else None
        if final is not None:
            self.detok.finalize()
        finish = settle_step(self.admission, self.host.send, self.host.log,
                             self.detok.last_segment, final, looping, time.perf_counter())
        return False if finish is None else self._end(finish)

    # -- the end -----------------------------------------------------------------------

    def _close(self, keep: bool) -> int:
        """Frees the sampler and returns the sequence to the cache; tokens stored."""
        if self._done:
            return 0
        self._done = True
        self.sampler.free()
        if not keep:
            self.cache.discard(self.seq)
            return 0
        return self.cache.release(self.seq, (self.ids + self.generated)[:self.held])

    def _end(self, finish: Any) -> bool:
        # On cancel, text held back as a possible stop/marker is dropped; coalesced text is sent.
        self.coal.flush(self.host.send)
        if finish == "stop" and self.output.calls > 0:
            finish = "tool_calls"
        stored = self._close(keep=True)
        n_prompt, cached = self.n_prompt, self.cached
        self.host.send({"type": "done", "id": self.id, "finish_reason": finish,
                        "stop_sequence": self.output.matched if finish == "stop_sequence" else None,
                        "prompt_tokens": n_prompt, "completion_tokens": int(self.completion),
                        "cached_tokens": cached,
                        "cache_created_tokens": created_tokens(stored, self.breakpoint, cached)})
        self.host.log(f"[worker] generate id={self.id} finish={finish} prompt_tokens={n_prompt} "
                      f"cached_tokens={cached} completion_tokens={self.completion} path=solo "
                      f"engine=llama gen_tps={self.tps:.1f} "
                      f"seconds={time.perf_counter() - self.t0:.3f}")
        return True


def run_to_end(solo: LlamaSolo) -> None:
    """Steps a generation until it ends (the warm-up; no loop around it)."""
    while not solo.step():
        pass
