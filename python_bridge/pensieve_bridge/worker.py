"""The worker's main loop: one model, commands in order, generations stepped between them.

poll() only reads commands into a queue; answer_immediate() answers cancel/stats/... from it
(also from inside a solo's prefill); the loop dispatches the rest between steps. A generate
that finds nothing running runs solo (solo.py, llama/solo.py); one that arrives while others
run joins the batch (batch.py) when the model can be batched, and a running solo is then
handed to the batch. Each path steps a generation.Generation."""

from __future__ import annotations

import gc
import os
import platform
import queue
import sys
import traceback
from collections import deque
from typing import Any, Optional

import mlx.core as mx

from . import faults, memory
from .batch import Batch, can_batch
from .commands import parse_command
from .errors import WorkerError, bad_request
from .generation import Stepper, done_message
from .llama.solo import LlamaSolo
from .model import LoadedModel, load_model
from .options import LoadOptions, configure, load_options
from .params import parse_prompt, render
from .solo import Solo
from .streams import EOF_MARK, ProtocolOut
from .warmup import is_llama, warm_up

# Answered at once even while a generation runs (also inside a solo's prefill); everything
# else waits in order for the loop. (The server sends count_tokens to counter.py, not here.)
IMMEDIATE = {"cancel", "stats", "count_tokens", "cache_relieve"}


def hello() -> dict:
    from importlib.metadata import version

    from .gguf.blas import describe_blas

    device = "gpu" if mx.metal.is_available() else "cpu"
    return {"type": "hello", "pid": os.getpid(), "python": platform.python_version(),
            "mlx": mx.__version__, "mlx_lm": version("mlx-lm"), "platform": sys.platform,
            "device": device, "blas": describe_blas(device)}


class Worker:
    def __init__(self, out: ProtocolOut, inbox: "queue.Queue[object]"):
        self.out = out
        self.inbox = inbox
        # Commands read but not yet run, in order; the loop dispatches them between steps.
        self.deferred: deque = deque()
        self.lm: Optional[LoadedModel] = None
        # The lone generation (solo.Solo or llama.solo.LlamaSolo), stepped once per loop turn.
        self.solo: Optional[Stepper] = None
        # Generations that arrive while others run share this BatchGenerator (None: one at a time).
        self.batch: Optional[Batch] = None
        self.eof = False
        self.counts = {"solo": 0, "batched": 0}  # generations started on each path

    # -- plumbing ---------------------------------------------------------------

    def send(self, msg: dict) -> None:
        self.out.send(msg)

    def log(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def _parse(self, raw: bytes) -> Optional[dict]:
        """A command dict, or None after answering a malformed line."""
        return parse_command(raw, self.send)

    def poll(self) -> None:
        """Reads what has arrived into `deferred`; runs nothing (EOF cancels what runs)."""
        while True:
            try:
                raw = self.inbox.get_nowait()
            except queue.Empty:
                return
            if raw is EOF_MARK:
                # The server is gone: stop generating, then exit.
                self.eof = True
                if self.solo is not None:
                    self.solo.gen.cancelled = True
                if self.batch is not None:
                    self.batch.cancel_all(self)
                continue
            msg = self._parse(raw)
            if msg is not None:
                self.deferred.append(msg)

    def answer_immediate(self) -> None:
        """Between steps, or inside a solo's prefill: answers cancel/stats/... now; the rest
        (a generate too) stays queued in order for the loop."""
        self.poll()
        if not any(m["cmd"] in IMMEDIATE for m in self.deferred):
            return
        waiting = self.deferred
        self.deferred = deque()
        for msg in waiting:
            if msg["cmd"] in IMMEDIATE:
                self.dispatch(msg)
            else:
                self.deferred.append(msg)

    def _can_join(self, msg: dict) -> bool:
        # Joins the batch while others run, unless it or the solo asks for a seed
        # (MLX's seed is global: a seeded generate runs alone) or every slot is taken
        # (the solo counts as one).
        if msg["cmd"] != "generate" or self.batch is None or not self._running():
            return False
        if msg.get("seed") is not None or (self.solo is not None and self.solo.gen.seeded):
            return False
        taken = len(self.batch.by_uid) + (1 if self.solo is not None else 0)
        return taken < self.batch.max_batch

    def _batch_busy(self) -> bool:
        return self.batch is not None and self.batch.busy

    def _running(self) -> bool:
        return self.solo is not None or self._batch_busy()

    def _step_solo(self) -> None:
        solo, failure = self.solo, None
        gid = solo.gen.id
        try:
            if not solo.step():
                return
        except WorkerError as exc:
            failure = exc.reply(gid)
        except Exception as exc:  # reported as internal; the worker keeps serving
            self.log(f"[worker] generate id={gid} failed:\n{traceback.format_exc()}")
            failure = WorkerError("internal", f"{type(exc).__name__}: {exc}").reply(gid)
        # Drop the generation (its KV cache, if not kept) before the cache is cleared.
        self.solo = solo = None
        self._after_generate(gid, failure)

    def _hand_off(self) -> None:
        # Others joined: the solo continues in the batch (one forward pass per step for all).
        solo = self.solo
        if not solo.hand_off():
            return  # not yet (prefill) or not exactly possible: it keeps stepping solo
        self.solo = None
        try:
            self.batch.adopt(solo)
        except Exception as exc:  # the solo's stream is closed: it ends with an error
            gid = solo.gen.id
            self.log(f"[worker] hand-off of id={gid} failed:\n{traceback.format_exc()}")
            solo.gen.coal.flush(self.send)
            solo = None
            self._after_generate(gid, WorkerError(
                "internal", f"{type(exc).__name__}: {exc}").reply(gid))

    def _after_generate(self, gid: Any, failure: Optional[dict]) -> None:
        if failure is not None:
            self.send(failure)
            # The traceback's frames hold MLX arrays; free them before clearing.
            gc.collect()
        # Cache hygiene after every generation: success, error or cancel.
        memory.clear_and_log(f"after generate id={gid} "
                             f"({'error' if failure else 'done'})", self.log)

    def _step_batch(self) -> None:
        if self.solo is not None and self.batch.prefilling:
            self.solo.gen.coal.flush(self.send)  # a prefill chunk may run long: held text first
        try:
            with self.out.held():  # one flush for all lines of the step
                self.batch.step(self)
        except Exception as exc:  # every request in the batch fails; the worker keeps serving
            self.log(f"[worker] batch step failed:\n{traceback.format_exc()}")
            self.batch.fail_all(self, WorkerError("internal", f"{type(exc).__name__}: {exc}").reply(None))
            gc.collect()
        if not self.batch.busy:
            memory.clear_and_log("after batch (empty)", self.log)

    # -- loop -------------------------------------------------------------------

    def run(self) -> int:
        while not self.eof or self._running():
            if self._running():
                self._turn()
                continue
            if self.eof:
                break
            if self.deferred:
                msg = self.deferred.popleft()
            else:
                raw = self.inbox.get()
                if raw is EOF_MARK:
                    break
                msg = self._parse(raw)
                if msg is None:
                    continue
            if self.dispatch(msg) == "exit":
                return 0
        self.log("[worker] stdin closed; exiting")
        return 0

    def _turn(self) -> None:
        """One loop turn while generations run: commands, joiners, then one step of each."""
        self.answer_immediate()
        # Generates at the head of the queue join the batch, in order (one behind a seeded
        # generate, a full batch or another command waits).
        while not self.eof and self.deferred and self._can_join(self.deferred[0]):
            self.dispatch(self.deferred.popleft())
        if self.solo is not None and self._batch_busy():
            self._hand_off()
        # A solo still running (alone, or not yet handed off) steps by one token.
        if self.solo is not None:
            self._step_solo()
        if self._batch_busy():
            self._step_batch()

    def dispatch(self, msg: dict) -> Optional[str]:
        cmd, cmd_id = msg["cmd"], msg["id"]
        faults.make_noise(cmd)
        handler = getattr(self, f"cmd_{cmd}", None)
        if handler is None:
            self.send(bad_request(f"unknown command {cmd!r}").reply(cmd_id))
            return None
        try:
            return handler(msg)
        except WorkerError as exc:
            self.send(exc.reply(cmd_id))
        except Exception as exc:  # keep serving: the server decides what to do
            self.log(f"[worker] {cmd} id={cmd_id} failed:\n{traceback.format_exc()}")
            self.send(WorkerError("internal", f"{type(exc).__name__}: {exc}").reply(cmd_id))
        return None

    def _require_model(self) -> LoadedModel:
        if self.lm is None:
            raise WorkerError("not_loaded", "no model is loaded; send load first")
        return self.lm

    # -- commands ---------------------------------------------------------------

    def cmd_load(self, msg: dict) -> None:
        self.send(self.load(load_options(msg), msg["id"]))

    def load(self, opts: LoadOptions, cmd_id: Any) -> dict:
        """Loads the model (replacing any), warms it up; the `loaded` reply."""
        self._unload()
        memory.set_cache_limit(opts.cache_limit_gb)
        metal = memory.metal_info()
        if metal:
            self.log(f"[worker] metal device: {metal}")
        try:
            if opts.engine == "llama":
                from .llama.loader import load_llama_model

                self.lm = load_llama_model(opts.model, opts.tokenizer, opts.context_length,
                                           opts.prefill_step_size, opts.prompt_cache_entries,
                                           opts.prompt_cache_gb)
            else:
                self.lm = load_model(opts.model, opts.context_length, opts.prefill_step_size,
                                     opts.prompt_cache_entries, opts.prompt_cache_gb)
        except Exception as exc:
            self.log(f"[worker] load failed:\n{traceback.format_exc()}")
            raise WorkerError("load_failed", f"could not load {opts.model}: "
                              f"{type(exc).__name__}: {exc}") from exc
        configure(self.lm, opts)
        if opts.max_batch > 1 and not is_llama(self.lm) and can_batch(self.lm.model):
            self.batch = Batch(self.lm, opts.max_batch)
        self.lm.info["max_concurrency"] = self.batch.max_batch if self.batch else 1
        if opts.warmup:
            seconds = warm_up(self.lm, self.batch, self.log)
            if seconds is not None:
                self.log(f"[worker] warm-up generation: {seconds:.3f}s")
            gc.collect()
        # The baseline after load includes the warm-up's kernels and caches.
        mem = memory.clear_and_log("after load", self.log)
        return {"type": "loaded", "id": cmd_id, **self.lm.info,
                "cache_limit_gb": opts.cache_limit_gb, "memory": mem}

    def _unload(self) -> None:
        if self.batch is not None:
            self.batch.close()
            self.batch = None
        if self.lm is not None:  # one model per worker: free the old one first
            self.lm.prompt_cache.clear()
            if is_llama(self.lm):
                self.lm.model.close()  # llama.cpp's memory is not garbage-collected
            self.lm = None
            gc.collect()
            memory.clear_and_log("unload", self.log)

    def cmd_generate(self, msg: dict) -> None:
        lm = self._require_model()
        if self._running():  # only joiners get here while others run (see _can_join)
            self.batch.admit(self, msg)  # a WorkerError is answered by dispatch
            self.counts["batched"] += 1
            return
        try:
            # Sends started; the loop steps it from now on.
            self.solo = LlamaSolo(self, lm, msg) if is_llama(lm) else Solo(self, lm, msg)
        except WorkerError as exc:
            self._after_generate(msg["id"], exc.reply(msg["id"]))
            return
        except Exception as exc:  # reported as internal; the worker keeps serving
            self.log(f"[worker] generate id={msg['id']} failed:\n{traceback.format_exc()}")
            self._after_generate(msg["id"], WorkerError(
                "internal", f"{type(exc).__name__}: {exc}").reply(msg["id"]))
            return
        self.counts["solo"] += 1

    def cmd_cancel(self, msg: dict) -> None:
        target = msg.get("target")
        reply = {"type": "cancelled", "id": msg["id"], "target": target, "found": True}
        if self.batch is not None and target in self.batch.ids():
            self.send(reply)
            self.batch.cancel(self, target)  # its done follows the reply
            return
        if self.solo is not None and self.solo.gen.id == target:
            self.solo.gen.cancelled = True  # its done follows at its next step
            self.send(reply)
            return
        # A generate still waiting behind the current one: dropped, with a done of its own.
        queued = next((m for m in self.deferred
                       if m.get("cmd") == "generate" and m.get("id") == target), None)
        if queued is None:
            self.send({**reply, "found": False})
            return
        self.deferred.remove(queued)
        self.send(reply)
        self.send(done_message(target, "cancelled"))

    def cmd_count_tokens(self, msg: dict) -> None:
        lm = self._require_model()
        messages, tools, thinking = parse_prompt(msg)
        count = len(render(lm, messages, tools, thinking))
        self.send({"type": "count", "id": msg["id"], "input_tokens": count})

    def cmd_clear_cache(self, msg: dict) -> None:
        mem = memory.clear_and_log("clear_cache command", self.log)
        self.send({"type": "cleared", "id": msg["id"], "memory": mem})

    def cmd_stats(self, msg: dict) -> None:
        self.send({"type": "stats", "id": msg["id"],
                   "model": self.lm.name if self.lm else None,
                   "generating": self._generating()[0] if self._generating() else None,
                   "active": self._generating(),
                   "deferred": len(self.deferred), "memory": memory.snapshot(),
                   "prompt_cache": self._prompt_cache_stats(),
                   "solo_generations": self.counts["solo"],
                   "batched_generations": self.counts["batched"]})

    def _generating(self) -> list:
        solo = [self.solo.gen.id] if self.solo is not None else []
        return solo + (self.batch.ids() if self.batch is not None else [])

    def _prompt_cache_stats(self) -> dict:
        if self.lm is None:
            return {"entries": 0, "bytes": 0, "max_entries": 0, "max_bytes": 0,
                    "hits": 0, "misses": 0, "tokens_reused": 0}
        return self.lm.prompt_cache.stats()

    def cmd_cache_relieve(self, msg: dict) -> None:
        level = msg.get("level")
        if level not in ("trim", "drop"):
            raise bad_request('cache_relieve needs level "trim" or "drop"')
        if self.lm is not None:
            self.lm.prompt_cache.relieve(level)
        if level == "drop":
            # The entry in use by a running generation is not in the cache: safe.
            gc.collect()
            mx.clear_cache()
        st = self._prompt_cache_stats()
        self.log(f"[worker] cache_relieve {level}: entries={st['entries']} bytes={st['bytes']}")
        self.send({"type": "relieved", "id": msg["id"], "level": level,
                   "entries": st["entries"], "bytes": st["bytes"]})

    def cmd_shutdown(self, msg: dict) -> str:
        memory.clear_and_log("shutdown", self.log)
        self.send({"type": "bye", "id": msg["id"]})
        return "exit"

