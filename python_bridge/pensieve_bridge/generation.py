"""One `generate` command: render, admit, stream, stop, cancel."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

from . import faults
from .coalesce import Coalescer
from .errors import WorkerError, bad_request, prompt_too_long
from .model import LoadedModel, RenderError
from .prompt_cache import cache_length
from .splitter import OutputSplitter
from .stops import StopMatcher
from .toolcalls import new_call_id


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
    tool_choice: Any = "auto"  # "auto" | "none" | "required" | {"name": X}
    parallel_tool_calls: bool = True


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
    choice = msg.get("tool_choice")
    if choice is None:
        choice = "auto"
    if not (choice in ("auto", "none", "required") or (
            isinstance(choice, dict) and isinstance(choice.get("name"), str) and choice["name"])):
        raise bad_request('tool_choice must be "auto", "none", "required" or {"name": ...}')
    parallel = msg.get("parallel_tool_calls", True)
    if parallel is None:
        parallel = True
    if not isinstance(parallel, bool):
        raise bad_request("parallel_tool_calls must be a boolean")
    return GenerateParams(
        messages=messages, tools=tools, enable_thinking=thinking, max_tokens=max_tokens,
        temperature=_num(msg, "temperature", 1.0, 0.0, 100.0),
        top_p=_num(msg, "top_p", 1.0, 0.0, 1.0), top_k=top_k, stop=stop, seed=seed,
        tool_choice=choice, parallel_tool_calls=parallel,
    )


def render(lm: LoadedModel, messages: list, tools: Optional[list],
           thinking: Optional[bool]) -> list[int]:
    try:
        return lm.render(messages, tools, thinking)
    except RenderError as exc:
        raise bad_request(str(exc)) from exc


class TextOutput:
    """Turns detokenized fragments into delta / thinking / tool_call events.

    The splitter separates reasoning and tool calls first; stop sequences apply
    to the answer text only.
    """

    def __init__(self, gid: Any, stops: list[str], splitter: Optional[OutputSplitter] = None,
                 show_thinking: bool = False, parallel_tool_calls: bool = True):
        self.gid = gid
        self.stops = StopMatcher(stops)
        self.splitter = splitter or OutputSplitter()
        self.show_thinking = show_thinking
        self.parallel = parallel_tool_calls
        self.calls = 0

    @property
    def matched(self) -> Optional[str]:
        return self.stops.matched

    @property
    def stop_now(self) -> bool:
        """A stop sequence matched, or the one call allowed is complete."""
        return self.matched is not None or (not self.parallel and self.calls > 0)

    def feed(self, text: str) -> list[dict]:
        return self._events(self.splitter.feed(text), final=False)

    def finish(self) -> list[dict]:
        return self._events(self.splitter.finish(), final=True)

    def _events(self, segments: list, final: bool) -> list[dict]:
        out: list[dict] = []
        for kind, value in segments:
            if self.stop_now:
                break
            if kind == "text":
                text, _ = self.stops.feed(value)
                self._delta(out, text)
            elif kind == "thinking":
                if self.show_thinking:
                    out.append({"type": "thinking", "id": self.gid, "text": value})
            else:
                # Text held back by the stop matcher comes before the call.
                self._delta(out, self.stops.flush())
                self.calls += 1
                out.append({"type": "tool_call", "id": self.gid, "call_id": new_call_id(),
                            "name": value["name"], "arguments": value["arguments"]})
        if final and self.matched is None:
            self._delta(out, self.stops.flush())
        return out

    def _delta(self, out: list[dict], text: str) -> None:
        if text:
            out.append({"type": "delta", "id": self.gid, "text": text})


def prompt_cache_for(lm: LoadedModel, ids: list[int]) -> tuple[Optional[list], int]:
    """A KV cache holding the longest cached prefix of ids, and its length."""
    return lm.prompt_cache.fetch(ids)


def _ends_in_think(lm: LoadedModel, ids: list[int]) -> bool:
    # Qwen3 (thinking on) and R1 distills open <think> in the generation prompt.
    if lm.think is None:
        return False
    tail = lm.tokenizer.decode(ids[-48:])
    return tail.rfind(lm.think[0]) > tail.rfind(lm.think[1])


def plan_output(lm: LoadedModel, p: GenerateParams, ids: list[int]) -> tuple[list[int], OutputSplitter]:
    """The prompt ids (with any forced call start) and the splitter for its output."""
    fmt = lm.tool_format if (p.tools and p.tool_choice != "none") else None
    in_think = _ends_in_think(lm, ids)
    forced = None
    if fmt is not None and p.tool_choice != "auto":
        tool = p.tool_choice.get("name") if isinstance(p.tool_choice, dict) else None
        forced = fmt.forced_prefix(tool)
        text = forced
        if in_think:  # a forced call skips reasoning
            text, in_think = lm.think[1] + "\n\n" + forced, False
        ids = ids + list(lm.tokenizer.encode(text, add_special_tokens=False))
    splitter = OutputSplitter(fmt, p.tools, lm.think, in_think, forced)
    return ids, splitter


def run_generate(host: Host, lm: LoadedModel, msg: dict,
                 on_start: Callable[[Generation], None]) -> None:
    """Streams started/progress*/delta*/done; raises WorkerError on failure."""
    import mlx.core as mx
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    gid = msg["id"]
    p = parse_params(msg)
    ids, splitter = plan_output(lm, p, render(lm, p.messages, p.tools, p.enable_thinking))
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
        # stream_generate counts only the uncached rest; report the whole prompt.
        processed, total = processed + cached, total + cached
        if processed != last_progress[0]:
            last_progress[0] = processed
            host.send({"type": "progress", "id": gid, "processed": int(processed),
                       "total": int(total)})
        host.poll()
        if gen.cancelled:
            raise _Cancelled()

    output = TextOutput(gid, p.stop, splitter, bool(p.enable_thinking), p.parallel_tool_calls)
    sampler = make_sampler(temp=p.temperature, top_p=p.top_p, top_k=p.top_k)
    kwargs: dict[str, Any] = {"max_tokens": max_tokens, "sampler": sampler,
                              "prompt_progress_callback": on_progress,
                              "prefill_step_size": lm.prefill_step_size}
    if cache is None:
        from mlx_lm.models.cache import make_prompt_cache

        cache = make_prompt_cache(lm.model)
    kwargs["prompt_cache"] = cache  # ours, so it can be kept for the next prompt
    completion, finish, tps = 0, None, 0.0
    generated: list[int] = []
    coal = Coalescer(gid, lm.delta_window_s)
    t0 = time.perf_counter()
    # On Metal, stream_generate wires the model's memory (mx.set_wired_limit) for
    # the generation; the CPU build reports no working-set size, so it skips that.
    stream = stream_generate(lm.model, lm.tokenizer, mx.array(ids[cached:]), **kwargs)
    try:
        for resp in stream:
            completion, tps = resp.generation_tokens, resp.generation_tps
            generated.append(int(resp.token))
            if completion == 1:
                faults.after_first_token()
            now = time.perf_counter()
            if resp.finish_reason is not None:
                finish = resp.finish_reason  # "stop" (EOS) or "length"
                coal.push(host.send, output.feed(resp.text) + output.finish(), now)
                if output.matched is not None:
                    finish = "stop_sequence"
                break
            coal.push(host.send, output.feed(resp.text), now)
            if output.stop_now:
                finish = "stop_sequence" if output.matched is not None else "tool_calls"
                break
            host.poll()  # answers cancel/stats/count_tokens between tokens
            if gen.cancelled:
                finish = "cancelled"
                break
    except _Cancelled:
        finish = "cancelled"
    except BaseException:
        coal.flush(host.send)  # text already streamed comes before the error
        raise
    finally:
        stream.close()
    if finish is None:  # the stream ended without a final response
        finish = "cancelled" if gen.cancelled else "length"
        if finish == "length":
            coal.push(host.send, output.finish(), time.perf_counter())
    coal.flush(host.send)
    if finish == "stop" and output.calls > 0:
        finish = "tool_calls"
    stored = _keep_cache(lm, ids + generated, cache)
    host.send({"type": "done", "id": gid, "finish_reason": finish,
               "stop_sequence": output.matched if finish == "stop_sequence" else None,
               "prompt_tokens": n_prompt, "completion_tokens": int(completion),
               "cached_tokens": cached,
               "cache_created_tokens": created_tokens(stored, n_prompt, cached)})
    host.log(f"[worker] generate id={gid} finish={finish} prompt_tokens={n_prompt} "
             f"completion_tokens={completion} gen_tps={tps:.1f} "
             f"seconds={time.perf_counter() - t0:.3f}")


def created_tokens(stored: int, n_prompt: int, cached: int) -> int:
    """Prompt tokens newly written to the prefix cache (Anthropic's cache_creation).

    stored: tokens the kept entry holds (0: none kept); a cancelled prefill holds fewer."""
    return max(0, min(stored, n_prompt) - cached)


def _keep_cache(lm: LoadedModel, tokens: list[int], cache: list) -> int:
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


__all__ = ["Generation", "WorkerError", "parse_prompt", "render", "run_generate", "TextOutput"]
