"""A generate command's fields, checked, and the prompt they render to.

Shared by generate (admission.py) and count_tokens (worker.py, counter.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import bad_request
from .model import LoadedModel, RenderError
from .sampling import FALLBACK


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
    (the model's generation_config.json, sampling.py), then sampling.FALLBACK."""
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
