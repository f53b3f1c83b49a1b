"""The worker's main loop: one model, commands in order, generations stepped between polls.

A generate that finds nothing running runs solo (solo.py, stream_generate); one that
arrives while others run joins the batch (batch.py) when the model can be batched, and
a running solo is then handed to the batch."""

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
from .batch import DEFAULT_MAX_BATCH, Batch, can_batch
from .coalesce import DEFAULT_WINDOW_S
from .commands import parse_command
from .errors import WorkerError, bad_request
from .generation import parse_prompt, render
from .model import LoadedModel, load_model
from .llama.fields import engine_fields
from .llama.solo import LlamaSolo
from .solo import Solo
from .streams import EOF_MARK, ProtocolOut
from .loops import DEFAULT_SPAN
from .sampling import read_defaults
from .warmup import is_llama, warm_up

DEFAULT_CACHE_LIMIT_GB = 5.0
DEFAULT_MAX_OUTPUT_TOKENS = 8192
# Answered at once even while a generation runs; everything else waits for it.
# (The server sends count_tokens to the token counter, counter.py, not here.)
IMMEDIATE = {"cancel", "stats", "count_tokens", "cache_relieve"}
DEFAULT_PROMPT_CACHE_ENTRIES = 4
DEFAULT_PROMPT_CACHE_GB = 2.0


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
        self.deferred: deque = deque()
        self.lm: Optional[LoadedModel] = None
        # The lone generation on stream_generate, stepped one token per loop turn.
        self.solo: Optional[Solo] = None
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
        """Between tokens: answer cancel/stats/count_tokens now, defer the rest."""
        while True:
            try:
                raw = self.inbox.get_nowait()
            except queue.Empty:
                return
            if raw is EOF_MARK:
                # The server is gone: stop generating, then exit.
                self.eof = True
                if self.solo is not None:
                    self.solo.cancelled = True
                if self.batch is not None:
                    self.batch.cancel_all(self)
                continue
            msg = self._parse(raw)
            if msg is None:
                continue
            if msg["cmd"] in IMMEDIATE or self._joins_batch(msg):
                self._dispatch(msg)
            else:
                self.deferred.append(msg)

    def _joins_batch(self, msg: dict) -> bool:
        # A fresh generate joins at once unless something waits before it (order is kept).
        return not self.deferred and self._can_join(msg)

    def _can_join(self, msg: dict) -> bool:
        # Joins the batch while others run, unless it or the solo asks for a seed
        # (MLX's seed is global: a seeded generate runs alone) or every slot is taken
        # (the solo counts as one).
        if msg["cmd"] != "generate" or self.batch is None or not self._running():
            return False
        if msg.get("seed") is not None or (self.solo is not None and self.solo.seeded):
            return False
        taken = len(self.batch.by_uid) + (1 if self.solo is not None else 0)
        return taken < self.batch.max_batch

    def _batch_busy(self) -> bool:
        return self.batch is not None and self.batch.busy

    def _running(self) -> bool:
        return self.solo is not None or self._batch_busy()

    def _step_solo(self) -> None:
        solo, failure = self.solo, None
        try:
            if not solo.step():
                return
        except WorkerError as exc:
            failure = exc.reply(solo.id)
        except Exception as exc:  # reported as internal; the worker keeps serving
            self.log(f"[worker] generate id={solo.id} failed:\n{traceback.format_exc()}")
            failure = WorkerError("internal", f"{type(exc).__name__}: {exc}").reply(solo.id)
        gid = solo.id
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
            self.batch.adopt(self, solo)
        except Exception as exc:  # the solo's stream is closed: it ends with an error
            self.log(f"[worker] hand-off of id={solo.id} failed:\n{traceback.format_exc()}")
            solo.coal.flush(self.send)
            gid, solo = solo.id, None
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
            self.solo.coal.flush(self.send)  # a prefill chunk may run long: held text first
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
                # Generates that waited (behind a seeded one, or for a slot) join first, in order.
                while self.deferred and self._can_join(self.deferred[0]):
                    self._dispatch(self.deferred.popleft())
                # Between steps: answer cancel/stats/..., let new generates join.
                self.poll()
                if self.solo is not None and self._batch_busy():
                    self._hand_off()
                # A solo still running (alone, or not yet handed off) steps by one token.
                if self.solo is not None:
                    self._step_solo()
                if self._batch_busy():
                    self._step_batch()
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
            if self._dispatch(msg) == "exit":
                return 0
        self.log("[worker] stdin closed; exiting")
        return 0

    def _dispatch(self, msg: dict) -> Optional[str]:
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
        name = msg.get("model")
        if not isinstance(name, str) or not name:
            raise bad_request("load needs a model (path or Hugging Face id)")
        limit = msg.get("cache_limit_gb", DEFAULT_CACHE_LIMIT_GB)
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0:
            raise bad_request("cache_limit_gb must be a number >= 0")
        for key in ("context_length", "prefill_step_size"):
            val = msg.get(key)
            if val is not None and (isinstance(val, bool) or not isinstance(val, int) or val < 1):
                raise bad_request(f"{key} must be an integer >= 1")
        entries = msg.get("prompt_cache_entries", DEFAULT_PROMPT_CACHE_ENTRIES)
        if isinstance(entries, bool) or not isinstance(entries, int) or entries < 0:
            raise bad_request("prompt_cache_entries must be an integer >= 0")
        pc_gb = msg.get("prompt_cache_gb", DEFAULT_PROMPT_CACHE_GB)
        if isinstance(pc_gb, bool) or not isinstance(pc_gb, (int, float)) or pc_gb < 0:
            raise bad_request("prompt_cache_gb must be a number >= 0")
        max_batch = msg.get("max_batch", DEFAULT_MAX_BATCH)
        if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
            raise bad_request("max_batch must be an integer >= 1")
        window_ms = msg.get("coalesce_ms", DEFAULT_WINDOW_S * 1000)
        if isinstance(window_ms, bool) or not isinstance(window_ms, (int, float)) or not 0 <= window_ms <= 60_000:
            raise bad_request("coalesce_ms must be a number in [0, 60000]")
        warmup = msg.get("warmup", True)
        if not isinstance(warmup, bool):
            raise bad_request("warmup must be a boolean")
        engine, tokenizer = engine_fields(msg)
        limits = _generation_limits(msg)
        reply = self.load(name, float(limit), msg.get("context_length"),
                          msg.get("prefill_step_size"), msg["id"], entries, float(pc_gb),
                          max_batch, window_ms / 1000, warmup, engine, tokenizer)
        # A llama model's generation_config.json sits in its tokenizer directory.
        self._apply_limits(limits, [tokenizer or self.lm.info.get("tokenizer"), name], reply)
        self.send(reply)

    def _apply_limits(self, limits: tuple[int, int], dirs: list, reply: dict) -> None:
        """Output cap, loop guard and sampling defaults of the loaded model (also in `loaded`)."""
        lm = self.lm
        lm.sampling = read_defaults(dirs)
        own = lm.sampling.pop("max_new_tokens", None)
        cap, lm.loop_span = limits
        if lm.info.get("demo"):
            # Random weights loop by nature; the guard is for real models that degenerate.
            lm.loop_span = 0
        lm.max_output_tokens = min(cap, own) if isinstance(own, int) and own > 0 else cap
        for info in (lm.info, reply):
            info.update(sampling_defaults=dict(lm.sampling), max_output_tokens=lm.max_output_tokens,
                        loop_guard_tokens=lm.loop_span)

    def load(self, name: str, cache_limit_gb: float, context_length: Optional[int],
             prefill_step_size: Optional[int], cmd_id: Any,
             prompt_cache_entries: int = DEFAULT_PROMPT_CACHE_ENTRIES,
             prompt_cache_gb: float = DEFAULT_PROMPT_CACHE_GB,
             max_batch: int = DEFAULT_MAX_BATCH, delta_window_s: float = DEFAULT_WINDOW_S,
             warmup: bool = True, engine: str = "mlx", tokenizer: Optional[str] = None) -> dict:
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
        memory.set_cache_limit(cache_limit_gb)
        metal = memory.metal_info()
        if metal:
            self.log(f"[worker] metal device: {metal}")
        try:
            if engine == "llama":
                from .llama.loader import load_llama_model

                self.lm = load_llama_model(name, tokenizer, context_length, prefill_step_size,
                                           prompt_cache_entries, prompt_cache_gb)
            else:
                self.lm = load_model(name, context_length, prefill_step_size,
                                     prompt_cache_entries, prompt_cache_gb)
        except Exception as exc:
            self.log(f"[worker] load failed:\n{traceback.format_exc()}")
            raise WorkerError("load_failed", f"could not load {name}: "
                              f"{type(exc).__name__}: {exc}") from exc
        self.lm.delta_window_s = delta_window_s
        if max_batch > 1 and not is_llama(self.lm) and can_batch(self.lm.model):
            self.batch = Batch(self.lm, max_batch)
        self.lm.info["max_concurrency"] = self.batch.max_batch if self.batch else 1
        if warmup:
            seconds = warm_up(self.lm, self.batch, self.log)
            if seconds is not None:
                self.log(f"[worker] warm-up generation: {seconds:.3f}s")
            gc.collect()
        # The baseline after load includes the warm-up's kernels and caches.
        mem = memory.clear_and_log("after load", self.log)
        return {"type": "loaded", "id": cmd_id, **self.lm.info,
                "cache_limit_gb": cache_limit_gb, "memory": mem}

    def cmd_generate(self, msg: dict) -> None:
        lm = self._require_model()
        if self._running():  # only joiners get here while others run (see _can_join)
            self.batch.admit(self, msg)  # a WorkerError is answered by _dispatch
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
        found = False
        if self.batch is not None and target in self.batch.ids():
            self.send({"type": "cancelled", "id": msg["id"], "target": target, "found": True})
            self.batch.cancel(self, target)  # its done follows the reply
            return
        if self.solo is not None and self.solo.id == target:
            self.solo.cancelled = True  # its done follows at its next step
            found = True
        else:
            # A generate still waiting behind the current one: drop it.
            for queued in list(self.deferred):
                if queued.get("cmd") == "generate" and queued.get("id") == target:
                    self.deferred.remove(queued)
                    found = True
                    self.send({"type": "cancelled", "id": msg["id"], "target": target,
                               "found": True})
                    self.send({"type": "done", "id": target, "finish_reason": "cancelled",
                               "stop_sequence": None, "prompt_tokens": 0,
                               "completion_tokens": 0, "cached_tokens": 0,
                               "cache_created_tokens": 0})
                    return
        self.send({"type": "cancelled", "id": msg["id"], "target": target, "found": found})

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
        solo = [self.solo.id] if self.solo is not None else []
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


def _generation_limits(msg: dict) -> tuple[int, int]:
    """(max_output_tokens, loop_guard_tokens) of a load command."""
    cap = msg.get("max_output_tokens", DEFAULT_MAX_OUTPUT_TOKENS)
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise bad_request("max_output_tokens must be an integer >= 1")
    span = msg.get("loop_guard_tokens", DEFAULT_SPAN)
    if isinstance(span, bool) or not isinstance(span, int) or span < 0:
        raise bad_request("loop_guard_tokens must be an integer >= 0")
    return cap, span
