"""Concurrent generations in one mlx-lm BatchGenerator (continuous batching).

Each request keeps its own detokenizer, output splitter, stop sequences and
tool-call handling; the batch only shares the model's forward passes. The
prompt-prefix cache works as on the single path: a request is inserted with
the cached prefix's KV cache, and its final cache is stored back when it ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

from . import memory
from .admission import admit
from .coalesce import Coalescer
from .constrain import processors
from .generation import GenerateParams, Host, TextOutput, created_tokens, prompt_cache_for
from .loops import LoopGuard
from .model import LoadedModel
from .prompt_cache import cache_length
from .sampling import logits_processors

DEFAULT_MAX_BATCH = 4


def can_batch(model: Any) -> bool:
    """True when every layer cache can be merged into a batch (mlx-lm server's test)."""
    from mlx_lm.models.cache import make_prompt_cache

    try:
        return all(hasattr(c, "merge") for c in make_prompt_cache(model))
    except Exception:  # noqa: BLE001 - an odd model is simply served one at a time
        return False


@dataclass
class Request:
    gid: Any
    uid: int
    params: GenerateParams
    n_prompt: int
    cached: int
    output: TextOutput
    detok: Any
    coal: Coalescer
    t0: float = field(default_factory=time.perf_counter)
    completion: int = 0
    last_progress: int = -1
    resumed: bool = False  # began solo (solo.py) and continues here: its prefill is done
    breakpoint: int = 0  # prompt tokens up to the last cache breakpoint (cache_breakpoint)
    loop: Optional[LoopGuard] = None


class Batch:
    """The BatchGenerator and the requests in it; driven by the worker loop."""

    def __init__(self, lm: LoadedModel, max_batch: int):
        from mlx_lm.generate import BatchGenerator, StopSequences

        self.lm = lm
        self.max_batch = max_batch
        self.stops = StopSequences([[t] for t in lm.tokenizer.eos_token_ids])
        self.gen = BatchGenerator(lm.model, completion_batch_size=max_batch,
                                  prefill_batch_size=max_batch,
                                  prefill_step_size=lm.prefill_step_size)
        self.by_uid: dict[int, Request] = {}

    @property
    def busy(self) -> bool:
        return bool(self.by_uid)

    @property
    def prefilling(self) -> bool:
        """Some request has not had its first token yet: the next step may run long."""
        return any(r.completion == 0 for r in self.by_uid.values())

    def ids(self) -> list:
        return [r.gid for r in self.by_uid.values()]

    def close(self) -> None:
        self.gen.close()

    # -- admission ----------------------------------------------------------------

    def admit(self, host: Host, msg: dict) -> None:
        """started + first progress, then the request joins the batch; raises WorkerError."""
        from mlx_lm.sample_utils import make_sampler

        lm, gid = self.lm, msg["id"]
        a = admit(host, lm, msg)
        p, ids, n_prompt, max_tokens, constraint = a.params, a.ids, a.n_prompt, a.max_tokens, a.constraint
        cache, cached = prompt_cache_for(lm, ids)
        sampler = make_sampler(temp=p.temperature, top_p=p.top_p, top_k=p.top_k)
        (uid,) = self.gen.insert([ids[cached:]], max_tokens=[max_tokens],
                                 caches=[cache] if cache is not None else None,
                                 all_tokens=[ids[:cached]], samplers=[sampler],
                                 logits_processors=[logits_processors(p.repetition_penalty)
                                                    + processors(constraint, len(ids))],
                                 stop_sequences=[self.stops])
        req = Request(gid, uid, p, n_prompt, cached, a.output, lm.tokenizer.detokenizer, a.coal,
                      breakpoint=a.breakpoint, loop=a.loop)
        self.by_uid[uid] = req
        host.send({"type": "started", "id": gid, "prompt_tokens": n_prompt, "cached_tokens": cached})
        self._progress(host, req, cached)

    def adopt(self, host: Host, solo: Any) -> None:
        """Continues a solo generation (after solo.hand_off()) in the batch, so the batch
        runs one forward pass per step for everyone instead of the solo running its own."""
        from mlx_lm.sample_utils import make_sampler

        p = solo.params
        tokens = solo.ids + solo.generated
        detok = self.lm.tokenizer.detokenizer
        for token in solo.generated:  # the same state as the solo's detokenizer
            detok.add_token(token)
        detok.last_segment  # noqa: B018 - its text was sent by the solo
        sampler = make_sampler(temp=p.temperature, top_p=p.top_p, top_k=p.top_k)
        # Last: nothing is left in the generator if anything before fails.
        (uid,) = self.gen.insert([tokens[-1:]], max_tokens=[solo.max_tokens - solo.completion],
                                 caches=[solo.cache], all_tokens=[tokens[:-1]],
                                 samplers=[sampler],
                                 # The solo's constraint goes on where it stopped.
                                 logits_processors=[logits_processors(p.repetition_penalty)
                                                    + processors(getattr(solo, "constraint", None),
                                                                 len(solo.ids))],
                                 stop_sequences=[self.stops])
        self.by_uid[uid] = Request(solo.id, uid, p, solo.n_prompt, solo.cached, solo.output,
                                   detok, solo.coal, t0=solo.t0, completion=solo.completion,
                                   resumed=True, breakpoint=solo.breakpoint, loop=solo.loop)

    # -- stepping -----------------------------------------------------------------

    def step(self, host: Host) -> None:
        """One BatchGenerator step: prefill chunks and/or one token for every decoder."""
        if self.prefilling:
            # A prefill chunk may run long: held text of the others goes out first.
            for r in self.by_uid.values():
                r.coal.flush(host.send)
        prompt_resps, gen_resps = self.gen.next()
        now = time.perf_counter()
        for r in prompt_resps:
            req = self.by_uid.get(r.uid)
            if req is not None and not req.resumed:
                self._progress(host, req, req.cached + int(r.progress[0]))
        stop_now = []
        for r in gen_resps:
            req = self.by_uid.get(r.uid)
            if req is None:
                continue
            req.completion += 1
            if req.completion == 1 and not self._first_token(host, req):
                continue
            if r.finish_reason == "stop":  # end of turn: the EOS token is not text
                req.detok.finalize()
            else:
                req.detok.add_token(r.token)
                if r.finish_reason == "length":
                    req.detok.finalize()
            text = req.detok.last_segment
            if r.finish_reason is not None:
                req.coal.push(host.send, req.output.feed(text) + req.output.finish(), now)
                finish = "stop_sequence" if req.output.matched is not None else r.finish_reason
                self._finish(host, req, finish, self._keep(r.all_tokens, r.prompt_cache))
                continue
            req.coal.push(host.send, req.output.feed(text), now)
            if req.output.stop_now:
                stop_now.append((req, "stop_sequence" if req.output.matched is not None
                                 else "tool_calls"))
            elif req.loop is not None and req.loop.push(r.token):
                # Repeating itself: stopped, and reported as max_tokens (loops.py).
                host.log(f"[worker] generate id={req.gid} repeats a {req.loop.period}-token "
                         f"pattern for {req.loop.span} tokens; stopped")
                stop_now.append((req, "length"))
        for req, finish in stop_now:
            self._remove(host, req, finish)
        for req in self.by_uid.values():
            req.coal.tick(host.send, now)

    def fail_all(self, host: Host, error: dict) -> None:
        """A step failed: every request ends with this error (no done); a fresh generator."""
        from mlx_lm.generate import BatchGenerator

        for req in list(self.by_uid.values()):
            req.coal.flush(host.send)
            host.send({**error, "id": req.gid})
        self.by_uid.clear()
        self.gen.close()
        self.gen = BatchGenerator(self.lm.model, completion_batch_size=self.max_batch,
                                  prefill_batch_size=self.max_batch,
                                  prefill_step_size=self.lm.prefill_step_size)

    def cancel(self, host: Host, gid: Any) -> bool:
        for req in list(self.by_uid.values()):
            if req.gid == gid:
                self._remove(host, req, "cancelled")
                return True
        return False

    def cancel_all(self, host: Host) -> None:
        for req in list(self.by_uid.values()):
            self._remove(host, req, "cancelled")

    # -- helpers ------------------------------------------------------------------

    def _first_token(self, host: Host, req: Request) -> bool:
        """Fault injection after a request's first token; False when it failed the request."""
        from . import faults
        from .errors import WorkerError

        try:
            faults.after_first_token()
            return True
        except Exception as exc:  # generate_error: this request ends with an error, no done
            self.gen.remove([req.uid])
            self.by_uid.pop(req.uid, None)
            req.coal.flush(host.send)
            host.send(WorkerError("internal", f"{type(exc).__name__}: {exc}").reply(req.gid))
            memory.clear_and_log(f"after generate id={req.gid} (error)", host.log)
            return False

    def _progress(self, host: Host, req: Request, processed: int) -> None:
        if processed != req.last_progress:
            req.last_progress = processed
            host.send({"type": "progress", "id": req.gid, "processed": int(processed),
                       "total": int(req.n_prompt)})

    def _remove(self, host: Host, req: Request, finish: str) -> None:
        """Takes a request out of the batch (stop sequence, single call, cancel) and ends it."""
        caches = self.gen.remove([req.uid], return_prompt_caches=True)
        if finish == "cancelled":
            pass  # held-back text is dropped on cancel
        elif finish != "stop_sequence":
            req.coal.push(host.send, req.output.finish(), time.perf_counter())
        stored = 0
        if req.uid in caches:
            cache, tokens = caches[req.uid]
            stored = self._keep(tokens, cache)
        self._finish(host, req, finish, stored)

    def _keep(self, tokens: Optional[list], cache: Optional[list]) -> int:
        """Stores a finished request's KV cache; returns the tokens it holds (0: not kept)."""
        if not tokens or not cache:
            return 0
        tokens = list(tokens)
        held = cache_length(cache)
        if held is None or held != len(tokens):
            return 0  # contents not known exactly: never risk reusing a wrong cache
        return held if self.lm.prompt_cache.store(tokens, cache) else 0

    def _finish(self, host: Host, req: Request, finish: str, stored: int) -> None:
        self.by_uid.pop(req.uid, None)
        req.coal.flush(host.send)  # held text (also of a cancelled request) before its done
        if finish == "stop" and req.output.calls > 0:
            finish = "tool_calls"
        host.send({"type": "done", "id": req.gid, "finish_reason": finish,
                   "stop_sequence": req.output.matched if finish == "stop_sequence" else None,
                   "prompt_tokens": req.n_prompt, "completion_tokens": req.completion,
                   "cached_tokens": req.cached,
                   "cache_created_tokens": created_tokens(stored, req.breakpoint, req.cached)})
        host.log(f"[worker] generate id={req.gid} finish={finish} prompt_tokens={req.n_prompt} "
                 f"completion_tokens={req.completion} "
                 f"path={'solo+batch' if req.resumed else 'batch'} "
                 f"seconds={time.perf_counter() - req.t0:.3f}")
        # Cheap, so after every request (as on the single path); the loop clears again
        # when the batch is empty.
        memory.clear_and_log(f"after generate id={req.gid} (done)", host.log)
