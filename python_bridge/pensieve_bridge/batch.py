"""Concurrent generations in one mlx-lm BatchGenerator (continuous batching).

Each request is a generation.Generation (output splitter, stop sequences, tool
calls, `done`) with its own detokenizer; the batch only shares the model's
forward passes, and steps every request at once. The prompt-prefix cache works
as on the single path: a request is inserted with the cached prefix's KV cache,
and its final cache is stored back when it ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from . import memory
from .constrain import processors
from .errors import WorkerError
from .generation import Generation, Host
from .model import LoadedModel
from .prompt_cache import cache_length
from .sampling import logits_processors


def can_batch(model: Any) -> bool:
    """True when every layer cache can be merged into a batch (mlx-lm server's test)."""
    from mlx_lm.models.cache import make_prompt_cache

    try:
        return all(hasattr(c, "merge") for c in make_prompt_cache(model))
    except Exception:  # noqa: BLE001 - an odd model is simply served one at a time
        return False


@dataclass
class Request:
    gen: Generation
    uid: int
    detok: Any
    resumed: bool = False  # began solo (solo.py) and continues here: its prefill is done


class Batch:
    """The BatchGenerator and the requests in it; driven by the worker loop."""

    def __init__(self, lm: LoadedModel, max_batch: int):
        from mlx_lm.generate import StopSequences

        self.lm = lm
        self.max_batch = max_batch
        self.stops = StopSequences([[t] for t in lm.tokenizer.eos_token_ids])
        self.gen = self._generator()
        self.by_uid: dict[int, Request] = {}

    def _generator(self) -> Any:
        from mlx_lm.generate import BatchGenerator

        return BatchGenerator(self.lm.model, completion_batch_size=self.max_batch,
                              prefill_batch_size=self.max_batch,
                              prefill_step_size=self.lm.prefill_step_size)

    @property
    def busy(self) -> bool:
        return bool(self.by_uid)

    @property
    def prefilling(self) -> bool:
        """Some request has not had its first token yet: the next step may run long."""
        return any(r.gen.completion == 0 for r in self.by_uid.values())

    def ids(self) -> list:
        return [r.gen.id for r in self.by_uid.values()]

    def close(self) -> None:
        self.gen.close()

    # -- admission ----------------------------------------------------------------

    def admit(self, host: Host, msg: dict) -> None:
        """started + first progress, then the request joins the batch; raises WorkerError."""
        g = Generation(host, self.lm, msg, "batch")
        cache, cached = self.lm.prompt_cache.fetch(g.ids)
        uid = self._insert(g, g.ids[cached:], g.ids[:cached], g.max_tokens, cache)
        self.by_uid[uid] = Request(g, uid, self.lm.tokenizer.detokenizer)
        g.start(cached)
        g.progress(cached)

    def adopt(self, solo: Any) -> None:
        """Continues a solo generation (after solo.hand_off()) in the batch, so the batch
        runs one forward pass per step for everyone instead of the solo running its own."""
        g = solo.gen
        tokens = g.ids + solo.generated
        detok = self.lm.tokenizer.detokenizer
        for token in solo.generated:  # the same state as the solo's detokenizer
            detok.add_token(token)
        detok.last_segment  # noqa: B018 - its text was sent by the solo
        # Last: nothing is left in the generator if anything before fails.
        uid = self._insert(g, tokens[-1:], tokens[:-1], g.max_tokens - g.completion, solo.cache)
        g.path = "solo+batch"
        self.by_uid[uid] = Request(g, uid, detok, resumed=True)

    def _insert(self, g: Generation, rest: list[int], done: list[int], max_tokens: int,
                cache: Optional[list]) -> int:
        """One sequence into the generator: `done` tokens are in `cache`, `rest` still to feed."""
        from mlx_lm.sample_utils import make_sampler

        p = g.params
        sampler = make_sampler(temp=p.temperature, top_p=p.top_p, top_k=p.top_k)
        # The constraint's offset is the prompt: a handed-off solo's grammar goes on where it stopped.
        (uid,) = self.gen.insert([rest], max_tokens=[max_tokens],
                                 caches=[cache] if cache is not None else None,
                                 all_tokens=[done], samplers=[sampler],
                                 logits_processors=[logits_processors(p.repetition_penalty)
                                                    + processors(g.constraint, len(g.ids))],
                                 stop_sequences=[self.stops])
        return uid

    # -- stepping -----------------------------------------------------------------

    def step(self, host: Host) -> None:
        """One BatchGenerator step: prefill chunks and/or one token for every decoder."""
        if self.prefilling:
            # A prefill chunk may run long: held text of the others goes out first.
            for r in self.by_uid.values():
                r.gen.coal.flush(host.send)
        prompt_resps, gen_resps = self.gen.next()
        now = time.perf_counter()
        for r in prompt_resps:
            req = self.by_uid.get(r.uid)
            if req is not None and not req.resumed:
                req.gen.progress(req.gen.cached + int(r.progress[0]))
        stop_now = []
        for r in gen_resps:
            req = self.by_uid.get(r.uid)
            if req is None:
                continue
            finish = self._token(host, req, r, now)
            if finish is None:
                continue
            if r.finish_reason is not None:  # the generator has let it go already
                self._finish(host, req, finish, lambda r=r: self._keep(r.all_tokens, r.prompt_cache))
            else:
                stop_now.append((req, finish))
        for req, finish in stop_now:
            self._remove(host, req, finish)
        for req in self.by_uid.values():
            req.gen.coal.tick(host.send, now)

    def _token(self, host: Host, req: Request, r: Any, now: float) -> Optional[str]:
        """One generated token of a request; its finish reason if it ends here."""
        try:
            looping = req.gen.token(r.token)
        except Exception as exc:  # generate_error (tests): this request ends with an error, no done
            self._fail_one(host, req, exc)
            return None
        if r.finish_reason == "stop":  # end of turn: the EOS token is not text
            req.detok.finalize()
        else:
            req.detok.add_token(r.token)
            if r.finish_reason == "length":
                req.detok.finalize()
        return req.gen.settle(req.detok.last_segment, r.finish_reason, looping, now)

    def fail_all(self, host: Host, error: dict) -> None:
        """A step failed: every request ends with this error (no done); a fresh generator."""
        for req in list(self.by_uid.values()):
            req.gen.coal.flush(host.send)
            host.send({**error, "id": req.gen.id})
        self.by_uid.clear()
        self.gen.close()
        self.gen = self._generator()

    def cancel(self, host: Host, gid: Any) -> bool:
        for req in list(self.by_uid.values()):
            if req.gen.id == gid:
                self._remove(host, req, "cancelled")
                return True
        return False

    def cancel_all(self, host: Host) -> None:
        for req in list(self.by_uid.values()):
            self._remove(host, req, "cancelled")

    # -- helpers ------------------------------------------------------------------

    def _fail_one(self, host: Host, req: Request, exc: Exception) -> None:
        self.gen.remove([req.uid])
        self.by_uid.pop(req.uid, None)
        req.gen.coal.flush(host.send)
        host.send(WorkerError("internal", f"{type(exc).__name__}: {exc}").reply(req.gen.id))
        memory.clear_and_log(f"after generate id={req.gen.id} (error)", host.log)

    def _remove(self, host: Host, req: Request, finish: str) -> None:
        """Takes a request out of the batch (stop sequence, single call, cancel) and ends it."""
        caches = self.gen.remove([req.uid], return_prompt_caches=True)
        held = caches.get(req.uid)
        self._finish(host, req, finish, lambda: self._keep(held[1], held[0]) if held else 0)

    def _keep(self, tokens: Optional[list], cache: Optional[list]) -> int:
        """Stores a finished request's KV cache; returns the tokens it holds (0: not kept)."""
        if not tokens or not cache:
            return 0
        tokens = list(tokens)
        held = cache_length(cache)
        if held is None or held != len(tokens):
            return 0  # contents not known exactly: never risk reusing a wrong cache
        return held if self.lm.prompt_cache.store(tokens, cache) else 0

    def _finish(self, host: Host, req: Request, finish: str, keep: Callable[[], int]) -> None:
        self.by_uid.pop(req.uid, None)
        req.gen.end(finish, keep)
        # Cheap, so after every request (as on the single path); the loop clears again
        # when the batch is empty.
        memory.clear_and_log(f"after generate id={req.gen.id} (done)", host.log)
