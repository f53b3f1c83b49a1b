"""One generate's lifecycle, the same on every path: admission to its single `done`.

A `Generation` owns what a request means: its admission (admission.py), `started` and
`progress`, the output events (splitting, stop sequences, coalescing), the end decision (EOS,
length, stop sequence, single call, loop guard), the `done` message, the log line and the
prompt-cache write. Steppers only produce tokens and their text: solo.py (mlx-lm's
stream_generate), batch.py (a BatchGenerator shared by several) and llama/solo.py (llama.cpp).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Protocol

from . import faults
from .admission import Admission, admit
from .model import LoadedModel


class Host(Protocol):
    """What a generation needs from the worker loop."""

    def send(self, msg: dict) -> None: ...
    def log(self, line: str) -> None: ...

    def answer_immediate(self) -> None:
        """Answers waiting cancel/stats/... now and queues the rest: never runs another generate."""


def created_tokens(stored: int, breakpoint: int, cached: int) -> int:
    """Prompt tokens newly written to the prefix cache.

    Only tokens up to the request's last cache breakpoint count (0: none, so
    no writes). stored: tokens the kept entry holds (0: none kept); a cancelled prefill holds fewer."""
    return max(0, min(stored, breakpoint) - cached)


def done_message(gid: Any, finish: str, stop_sequence: Optional[str] = None, prompt: int = 0,
                 completion: int = 0, cached: int = 0, created: int = 0) -> dict:
    """The `done` line; zero counts for a generate cancelled before it started."""
    return {"type": "done", "id": gid, "finish_reason": finish, "stop_sequence": stop_sequence,
            "prompt_tokens": int(prompt), "completion_tokens": int(completion),
            "cached_tokens": int(cached), "cache_created_tokens": int(created)}


class Generation:
    """One admitted generate; the constructor raises WorkerError (nothing sent) when it cannot run.

    `cancelled` may be set by the loop at any time; the stepper ends the generation at its
    next step. `path` (solo, batch, solo+batch after a hand-off) is for the log line."""

    def __init__(self, host: Host, lm: LoadedModel, msg: dict, path: str):
        self.host = host
        self.admission: Admission = admit(host.log, lm, msg)
        self.id = self.admission.gid
        self.path = path
        self.engine = lm.info.get("engine", "mlx")
        self.cancelled = False
        self.cached = 0  # prompt tokens read from the prefix cache
        self.completion = 0  # tokens generated
        self.t0 = time.perf_counter()
        self._t_first: Optional[float] = None
        self._last_progress = -1

    # -- the admission's facts ---------------------------------------------------------

    @property
    def params(self):
        return self.admission.params

    @property
    def ids(self) -> list[int]:
        return self.admission.ids

    @property
    def n_prompt(self) -> int:
        return self.admission.n_prompt

    @property
    def max_tokens(self) -> int:
        return self.admission.max_tokens

    @property
    def constraint(self):
        return self.admission.constraint

    @property
    def output(self):
        return self.admission.output

    @property
    def coal(self):
        return self.admission.coal

    @property
    def seeded(self) -> bool:
        # MLX's random state is global: a seeded generate runs alone (worker.py).
        return self.params.seed is not None

    @property
    def tps(self) -> float:
        """Generated tokens per second after the first (the log line's gen_tps)."""
        if self._t_first is None or self.completion < 2:
            return 0.0
        return (self.completion - 1) / max(1e-9, time.perf_counter() - self._t_first)

    # -- events --------------------------------------------------------------------------

    def start(self, cached: int) -> None:
        """`started`, once the stepper knows how much of the prompt the prefix cache holds."""
        self.cached = cached
        self.host.send({"type": "started", "id": self.id, "prompt_tokens": self.n_prompt,
                        "cached_tokens": cached})
        self.t0 = time.perf_counter()

    def progress(self, processed: int) -> None:
        if processed != self._last_progress:
            self._last_progress = processed
            self.host.send({"type": "progress", "id": self.id, "processed": int(processed),
                            "total": int(self.n_prompt)})

    def token(self, token: int) -> bool:
        """Counts one generated token; True when the output now loops (loops.py).

        Fault injection (tests) fires after the first token: it raises."""
        self.completion += 1
        if self.completion == 1:
            self._t_first = time.perf_counter()
            faults.after_first_token()
        return self.admission.loop.push(token)

    def settle(self, text: str, final: Optional[str], looping: bool, now: float) -> Optional[str]:
        """Feeds one token's text through the output; the finish reason if the generation ends here.

        final: the engine's own end ("stop" at EOS, "length"), or None while it goes on."""
        out, coal, send = self.output, self.coal, self.host.send
        if final is not None:
            coal.push(send, out.feed(text) + out.finish(), now)
            return "stop_sequence" if out.matched is not None else final
        coal.push(send, out.feed(text), now)
        if out.stop_now:
            return "stop_sequence" if out.matched is not None else "tool_calls"
        if looping:  # a model repeating itself would run to max_tokens: stop it, as max_tokens
            loop = self.admission.loop
            self.host.log(f"[worker] generate id={self.id} repeats a {loop.period}-token pattern "
                          f"for {loop.span} tokens; stopped")
            coal.push(send, out.finish(), now)
            return "length"
        return None

    def end(self, finish: Optional[str], keep: Callable[[], int]) -> None:
        """Sends the one `done`, after any held text; keep() stores the KV cache (tokens kept).

        finish None: the engine stopped without a reason (cancelled, else length)."""
        out, send = self.output, self.host.send
        if finish is None:
            finish = "cancelled" if self.cancelled else "length"
            if finish == "length":
                self.coal.push(send, out.finish(), time.perf_counter())
        # On cancel, text held back as a possible stop/marker is dropped; coalesced text is sent.
        self.coal.flush(send)
        if finish == "stop" and out.calls > 0:
            finish = "tool_calls"  # the turn ended at its calls
        stored = keep()
        send(done_message(self.id, finish, out.matched if finish == "stop_sequence" else None,
                          self.n_prompt, self.completion, self.cached,
                          created_tokens(stored, self.admission.breakpoint, self.cached)))
        self.host.log(f"[worker] generate id={self.id} finish={finish} prompt_tokens={self.n_prompt} "
                      f"cached_tokens={self.cached} completion_tokens={self.completion} "
                      f"path={self.path} engine={self.engine} gen_tps={self.tps:.1f} "
                      f"seconds={time.perf_counter() - self.t0:.3f}")


class Stepper:
    """A lone generation the worker loop steps (solo.py, llama/solo.py).

    Subclasses set `gen` and give _advance (one step; True once ended), _keep (store the
    KV cache: tokens kept) and _abandon (after a failure: nothing is kept)."""

    gen: Generation

    @property
    def n_prompt(self) -> int:
        return self.gen.n_prompt

    def step(self) -> bool:
        """One step; True once ended with its `done` sent.

        Raises on failure (text already released is sent first; no done)."""
        if self.gen.cancelled:
            return self._end("cancelled")
        try:
            return self._advance()
        except BaseException:
            self.gen.coal.flush(self.gen.host.send)  # text already streamed comes before the error
            self._abandon()
            raise

    def hand_off(self) -> bool:
        """Lets the batch continue this generation (solo.py); False: it stays here."""
        return False

    def _end(self, finish: Optional[str]) -> bool:
        self.gen.end(finish, self._keep)
        return True

    def _advance(self) -> bool:
        raise NotImplementedError

    def _keep(self) -> int:
        raise NotImplementedError

    def _abandon(self) -> None:
        raise NotImplementedError


def run_to_end(stepper: Stepper) -> None:
    """Steps a generation until it ends (the warm-up, benchmarks: no loop around it)."""
    while not stepper.step():
        pass
