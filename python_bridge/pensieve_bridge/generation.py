"""What every `generate` shares: parameters, prompt rendering, output events.

The lone path is solo.py (stream_generate), the concurrent one batch.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from .errors import WorkerError, bad_request
from .model import LoadedModel, RenderError
from .splitter import OutputSplitter
from .stops import StopMatcher
from .toolcalls import new_call_id


class Host(Protocol):
    """What a generation needs from the worker loop."""

    def send(self, msg: dict) -> None: ...
    def poll(self) -> None: ...
    def log(self, line: str) -> None: ...


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


def created_tokens(stored: int, n_prompt: int, cached: int) -> int:
    """Prompt tokens newly written to the prefix cache (Anthropic's cache_creation).

    stored: tokens the kept entry holds (0: none kept); a cancelled prefill holds fewer."""
    return max(0, min(stored, n_prompt) - cached)


__all__ = ["WorkerError", "parse_prompt", "render", "TextOutput", "created_tokens"]
