"""One `generate` command: render, admit, stream, stop, cancel."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

from . import faults
from .errors import WorkerError, bad_request, prompt_too_long
from .model import LoadedModel, RenderError
from .stops import StopMatcher


class Host(Protocol):
    """What a generation needs from the worker loop."""

    def send(self, msg: dict) -> None: ...
    def poll(self) -> None: ...
    def log(self, line: str) -> None: ...


class _Cancelled(Exception):
    """Raised from the prefill callback to abandon a cancelled prompt."""


@dataclass
class Generation:
    """The generation in flight; `cancel` may be set by the loop between tokens."""

    id: Any
    cancelled: bool = False


@dataclass
class GenerateParams:
    messages: list
    tools: Optional[list]
    enable_thinking: Optional[bool]
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    stop: list = field(default_factory=list)
    seed: Optional[int] = None


def _num(msg: dict, key: str, default: float, lo: float, hi: float) -> float:
    val = msg.get(key, default)
    if val is None:
        return default
    if isinstance(val, bool) or not isinstance(val, (int, float)) or not lo <= val <= hi:
        raise bad_request(f"{key} must be a number in [{lo}, {hi}]")
    return float(val)


def parse_prompt(msg: dict) -> tuple[list, Optional[list], Optional[bool]]:
    """messages/tools/enable_thinking, shared by generate and count_tokens."""
    messages = msg.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty array")
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise bad_request("each message must be an object with a role")
    tools = msg.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise bad_request("tools must be an array")
    thinking = msg.get("enable_thinking")
    if thinking is not None and not isinstance(thinking, bool):
        raise bad_request("enable_thinking must be a boolean")
    return messages, tools or None, thinking


def parse_params(msg: dict) -> GenerateParams:
    messages, tools, thinking = parse_prompt(msg)
    max_tokens = msg.get("max_tokens", 256)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise bad_request("max_tokens must be an integer >= 1")
    stop = msg.get("stop") or []
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise bad_request("stop must be an array of strings")
    top_k = msg.get("top_k") or 0
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise bad_request("top_k must be an integer >= 0")
    seed = msg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise bad_request("seed must be an integer")
    return GenerateParams(
        messages=messages, tools=tools, enable_thinking=thinking, max_tokens=max_tokens,
        temperature=_num(msg, "temperature", 1.0, 0.0, 100.0),
        top_p=_num(msg, "top_p", 1.0, 0.0, 1.0), top_k=top_k, stop=stop, seed=seed,
    )


def render(lm: LoadedModel, messages: list, tools: Optional[list],
           thinking: Optional[bool]) -> list[int]:
    try:
        return lm.render(messages, tools, thinking)
    except RenderError as exc:
        raise bad_request(str(exc)) from exc


class TextOutput:
    """Turns detokenized fragments into `delta` events.

    Extension point (issue 5): tool-call and thinking splitters go here, ahead
    of the stop matcher, emitting `tool_call` / `thinking` events.
    """

    def __init__(self, gid: Any, stops: list[str]):
        self.gid = gid
        self.stops = StopMatcher(stops)

    def feed(self, text: str) -> list[dict]:
        out, _ = self.stops.feed(text)
        return self._delta(out)

    @property
    def matched(self) -> Optional[str]:
        return self.stops.matched

    def finish(self) -> list[dict]:
        return self._delta(self.stops.flush())

    def _delta(self, text: str) -> list[dict]:
        return [{"type": "delta", "id": self.gid, "text": text}] if text else []


def prompt_cache_for(lm: LoadedModel, ids: list[int]) -> tuple[Optional[list], int]:
    """Extension point (issue 5): reuse a KV cache sharing a prefix with ids.

    Returns (prompt_cache for stream_generate, tokens already cached). No reuse yet.
    """
    return None, 0


def run_generate(host: Host, lm: LoadedModel, msg: dict,
                 on_start: Callable[[Generation], None]) -> None:
    """Streams started/progress*/delta*/done; raises WorkerError on failure."""
    import mlx.core as mx
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    gid = msg["id"]
    p = parse_params(msg)
    ids = render(lm, p.messages, p.tools, p.enable_thinking)
    n_prompt, ctx = len(ids), lm.context_length
    if n_prompt >= ctx:
        raise prompt_too_long(n_prompt, ctx)
    max_tokens = min(p.max_tokens, ctx - n_prompt)  # clamp, never refuse
    cache, cached = prompt_cache_for(lm, ids)
    gen = Generation(gid)
    on_start(gen)
    host.send({"type": "started", "id": gid, "prompt_tokens": n_prompt, "cached_tokens": cached})
    if p.seed is not None:
        mx.random.seed(p.seed)

    last_progress = [-1]

    def on_progress(processed: int, total: int) -> None:
        if processed != last_progress[0]:
            last_progress[0] = processed
            host.send({"type": "progress", "id": gid, "processed": int(processed),
                       "total": int(total)})
        host.poll()
        if gen.cancelled:
            raise _Cancelled()

    output = TextOutput(gid, p.stop)
    sampler = make_sampler(temp=p.temperature, top_p=p.top_p, top_k=p.top_k)
    kwargs: dict[str, Any] = {"max_tokens": max_tokens, "sampler": sampler,
                              "prompt_progress_callback": on_progress,
                              "prefill_step_size": lm.prefill_step_size}
    if cache is not None:
        kwargs["prompt_cache"] = cache
    completion, finish, tps = 0, None, 0.0
    t0 = time.perf_counter()
    # On Metal, stream_generate wires the model's memory (mx.set_wired_limit) for
    # the generation; the CPU build reports no working-set size, so it skips that.
    stream = stream_generate(lm.model, lm.tokenizer, mx.array(ids), **kwargs)
    try:
        for resp in stream:
            completion, tps = resp.generation_tokens, resp.generation_tps
            if completion == 1:
                faults.after_first_token()
            for ev in output.feed(resp.text):
                host.send(ev)
            if output.matched is not None:
                finish = "stop_sequence"
                break
            if resp.finish_reason is not None:
                finish = resp.finish_reason  # "stop" (EOS) or "length"
                break
            host.poll()  # answers cancel/stats/count_tokens between tokens
            if gen.cancelled:
                finish = "cancelled"
                break
    except _Cancelled:
        finish = "cancelled"
    finally:
        stream.close()
    if finish is None:  # the stream ended without a final response
        finish = "cancelled" if gen.cancelled else "length"
    if finish in ("stop", "length"):
        for ev in output.finish():
            host.send(ev)
    host.send({"type": "done", "id": gid, "finish_reason": finish,
               "stop_sequence": output.matched if finish == "stop_sequence" else None,
               "prompt_tokens": n_prompt, "completion_tokens": int(completion),
               "cached_tokens": cached})
    host.log(f"[worker] generate id={gid} finish={finish} prompt_tokens={n_prompt} "
             f"completion_tokens={completion} gen_tps={tps:.1f} "
             f"seconds={time.perf_counter() - t0:.3f}")


__all__ = ["Generation", "WorkerError", "parse_prompt", "render", "run_generate", "TextOutput"]
