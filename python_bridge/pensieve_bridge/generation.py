"""What every `generate` shares: parameters, prompt rendering, output events.

The lone path is solo.py (stream_generate), the concurrent one batch.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from .errors import WorkerError, bad_request
from .model import LoadedModel, RenderError
from .sampling import FALLBACK
from .prompt_cache import common_prefix
from .splitter import OutputSplitter
from .stops import StopMatcher


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
    repetition_penalty: Optional[float] = None
    # The last cache breakpoint: (messages covered, content characters of the last), or None.
    cache_prefix: Optional[tuple[int, Optional[int]]] = None


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
    _check_continue_final(msg.get("continue_final"), messages[-1])
    return messages, tools or None, thinking


def _continuable(last: dict) -> bool:
    content = last.get("content")
    return (last.get("role") == "assistant" and not last.get("tool_calls")
            and isinstance(content, str) and bool(content.strip()))


def _check_continue_final(flag: Any, last: dict) -> None:
    """The server decides what is a prefill (its API's rules); the worker only follows.

    Rendering continues a final assistant message with text and no tool calls (model.py), so
    an explicit flag must agree with that shape. Absent (older servers, direct callers): the
    shape alone decides, as it always did."""
    if flag is None:
        return
    if not isinstance(flag, bool):
        raise bad_request("continue_final must be a boolean")
    if flag and not _continuable(last):
        raise bad_request("continue_final needs a final assistant message with text and no tool calls")
    if not flag and _continuable(last):
        raise bad_request("a final assistant message with text is continued: send continue_final: true")


def _int_or_none(val: Any) -> bool:
    return val is None or (isinstance(val, int) and not isinstance(val, bool) and val >= 0)


def parse_cache_prefix(msg: dict, n_messages: int) -> Optional[tuple[int, Optional[int]]]:
    cp = msg.get("cache_prefix")
    if cp is None:
        return None
    n = cp.get("messages") if isinstance(cp, dict) else None
    chars = cp.get("content_chars") if isinstance(cp, dict) else None
    if n is None or not _int_or_none(n) or n > n_messages or not _int_or_none(chars):
        raise bad_request("cache_prefix must be {messages: 0..len(messages), content_chars?: integer >= 0}")
    return n, chars


def parse_params(msg: dict, defaults: Optional[dict] = None) -> GenerateParams:
    """The generate command's fields; unset sampling values come from `defaults`
    (the model's generation_config.json, sampling.py), then Anthropic's."""
    d = {**FALLBACK, **(defaults or {})}
    messages, tools, thinking = parse_prompt(msg)
    max_tokens = msg.get("max_tokens", 256)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise bad_request("max_tokens must be an integer >= 1")
    stop = msg.get("stop") or []
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise bad_request("stop must be an array of strings")
    top_k = msg.get("top_k")
    top_k = d["top_k"] if top_k is None else top_k
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
    penalty = msg.get("repetition_penalty")
    return GenerateParams(
        messages=messages, tools=tools, enable_thinking=thinking, max_tokens=max_tokens,
        temperature=_num(msg, "temperature", d["temperature"], 0.0, 100.0),
        top_p=_num(msg, "top_p", d["top_p"], 0.0, 1.0), top_k=top_k, stop=stop, seed=seed,
        tool_choice=choice, parallel_tool_calls=parallel,
        repetition_penalty=(d["repetition_penalty"] if penalty is None
                            else _num(msg, "repetition_penalty", 1.0, 0.01, 10.0)),
        cache_prefix=parse_cache_prefix(msg, len(messages)),
    )


def render(lm: LoadedModel, messages: list, tools: Optional[list],
           thinking: Optional[bool]) -> list[int]:
    try:
        return lm.render(messages, tools, thinking)
    except RenderError as exc:
        raise bad_request(str(exc)) from exc


def _utf16_prefix(text: str, units: int) -> str:
    # content_chars counts UTF-16 code units (the server's string lengths), not code points.
    return text.encode("utf-16-le")[:2 * units].decode("utf-16-le", errors="ignore")


def _common_text_prefix(a: str, b: str) -> int:
    # Binary search on slice equality: C-speed compares, not a Python loop per character.
    if b.startswith(a):
        return len(a)
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def cache_breakpoint(lm: LoadedModel, p: GenerateParams, ids: list[int]) -> int:
    """Prompt tokens up to the request's last cache breakpoint (0: none).

    Renders the prefix as text (no generation prompt). Cheap path: where it diverges from the
    prompt's text, the rest of the prompt must tokenize to the prompt's last ids; else the
    prefix is tokenized and its common prefix with the prompt's ids taken."""
    if p.cache_prefix is None:
        return 0
    n, chars = p.cache_prefix
    msgs = list(p.messages[:n])
    if chars is not None and msgs and isinstance(msgs[-1].get("content"), str):
        msgs[-1] = {**msgs[-1], "content": _utf16_prefix(msgs[-1]["content"], chars)}
    # The prefix as the template sees it: adapted like the prompt itself (templates.py).
    msgs, tools = lm.adapt(msgs, p.tools)
    kwargs: dict[str, Any] = {"add_generation_prompt": False, "tokenize": False}
    if tools:
        kwargs["tools"] = tools
    if p.enable_thinking is not None and lm._template_uses("enable_thinking"):
        kwargs["enable_thinking"] = bool(p.enable_thinking)
    try:
        text = lm.tokenizer.apply_chat_template(msgs, **kwargs)
    except Exception:  # noqa: BLE001 - e.g. a template that cannot render no messages: no writes
        return 0
    if not isinstance(text, str):
        return 0
    tok = lm.tokenizer
    full = tok.decode(ids, clean_up_tokenization_spaces=False)
    same = _common_text_prefix(text, full)
    tail = [int(t) for t in tok.encode(full[same:], add_special_tokens=False)] if same < len(full) else []
    if len(tail) <= len(ids) and ids[len(ids) - len(tail):] == tail:
        return len(ids) - len(tail)
    return common_prefix([int(t) for t in tok.encode(text, add_special_tokens=False)], ids)


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
        """A stop sequence matched, the one call allowed is complete, or the model
        wrote prose after its calls (dropped; the turn ends at the calls)."""
        return self.matched is not None or (self.calls > 0 and (
            not self.parallel or self.splitter.ended))

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
                # No call id: the server mints ids in its API's style.
                out.append({"type": "tool_call", "id": self.gid,
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
    """The prompt ids (with any forced call start) and the splitter for its output.

    With tools offered and tool_choice not "none", the splitter gets them: calls are
    checked against them, and generic JSON calls are found even without a parser."""
    tools = p.tools if (p.tools and p.tool_choice != "none") else None
    fmt = lm.tool_format if tools else None
    in_think = _ends_in_think(lm, ids)
    forced = None
    if fmt is not None and p.tool_choice != "auto":
        tool = p.tool_choice.get("name") if isinstance(p.tool_choice, dict) else None
        forced = fmt.forced_prefix(tool)
        text = forced
        if in_think:  # a forced call skips reasoning
            text, in_think = lm.think[1] + "\n\n" + forced, False
        ids = ids + list(lm.tokenizer.encode(text, add_special_tokens=False))
    splitter = OutputSplitter(fmt, tools, lm.think, in_think, forced)
    return ids, splitter


def created_tokens(stored: int, breakpoint: int, cached: int) -> int:
    """Prompt tokens newly written to the prefix cache (Anthropic's cache_creation).

    As Anthropic counts: only tokens up to the request's last cache breakpoint (0: none, so
    no writes). stored: tokens the kept entry holds (0: none kept); a cancelled prefill holds fewer."""
    return max(0, min(stored, breakpoint) - cached)


__all__ = ["WorkerError", "parse_prompt", "render", "TextOutput", "created_tokens", "cache_breakpoint"]
