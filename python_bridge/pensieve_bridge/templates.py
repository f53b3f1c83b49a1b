"""Chat templates that refuse roles or ignore tools: learn what one accepts, adapt to it.

`probe` renders a few tiny synthetic conversations once per model and records a
dialect: for each feature, "native" (the template renders it) or how Pensieve
rewrites it. `adapt` rewrites the neutral messages (and tools) to that dialect.
Decisions come from rendering the template, never from the model's name.

Every rewrite is causal: a message's rendering depends only on the messages before
it, so turn N's prompt stays a prefix of turn N+1's and prefix caching keeps working.
"""

from __future__ import annotations

import json
from typing import Any, Optional

NATIVE = "native"
FEATURES = ("system", "mid_system", "tool_calls", "tool_results", "tools", "roles")
# Every feature rewritten: what a template that rejects everything gets.
ADAPTED = {"system": "folded", "mid_system": "folded", "tool_calls": "assistant_text",
           "tool_results": "user_text", "tools": "system_prompt", "roles": "alternating"}
ALL_NATIVE = {**{f: NATIVE for f in FEATURES}, "roles": "free"}

JOIN = "\n\n"  # the TS translation's block join
SYSTEM_NOTE = "[System note] "
CALL_FORMAT_JSON = "json_block"  # ```json {"name", "arguments"} ``` (parsed by the splitter)
CALL_FORMAT_TAGS = "tool_call_tags"  # <tool_call>{...}</tool_call> (mlx-lm's json_tools)

# Marker strings of the probe conversations.
_U1, _U2, _A1, _S1, _S2 = "PROBE_U1", "PROBE_U2", "PROBE_A1", "PROBE_S1", "PROBE_S2"
_TOOL, _ARG, _RESULT = "probe_tool", "PROBE_ARG", "PROBE_RESULT"
_PROBE_TOOLS = [{"type": "function", "function": {
    "name": _TOOL, "description": "PROBE_DESCRIPTION",
    "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}]
_CALL = {"id": "call_probe", "type": "function",
         "function": {"name": _TOOL, "arguments": {"x": _ARG}}}


def _user(text: str) -> dict:
    return {"role": "user", "content": text}


def _assistant(text: str, calls: Optional[list] = None) -> dict:
    msg: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        msg["tool_calls"] = calls
    return msg


def _tool_result(text: str) -> dict:
    return {"role": "tool", "content": text, "tool_call_id": _CALL["id"], "name": _TOOL}


# ---------------------------------------------------------------------------------- probe

def _text(tokenizer: Any, messages: list, tools: Optional[list] = None) -> Optional[str]:
    """The template's text for `messages`, or None when it raises."""
    kwargs: dict[str, Any] = {"add_generation_prompt": True, "tokenize": False}
    if tools:
        kwargs["tools"] = tools
    try:
        out = tokenizer.apply_chat_template(messages, **kwargs)
    except Exception:  # noqa: BLE001 - any refusal (TemplateError, TypeError, ...) is a "no"
        return None
    return out if isinstance(out, str) else None


def _shows(tokenizer: Any, messages: list, *markers: str) -> bool:
    # Accepted *and* rendered: a template may drop what it does not know silently.
    text = _text(tokenizer, messages)
    return text is not None and all(m in text for m in markers)


def probe(tokenizer: Any) -> dict:
    """The template's dialect (see module doc). About ten tiny renders."""
    base = _text(tokenizer, [_user(_U1)])
    if base is None or _U1 not in base:
        # No usable template: nothing to learn; rendering fails as it always did.
        return {**{f: None for f in FEATURES}, "template": "unusable"}
    d: dict[str, Any] = {"template": "ok"}
    d["system"] = NATIVE if _shows(tokenizer, [{"role": "system", "content": _S1}, _user(_U1)],
                                   _S1, _U1) else "folded"
    d["mid_system"] = NATIVE if _shows(tokenizer, [
        _user(_U1), _assistant(_A1), {"role": "system", "content": _S2}, _user(_U2)],
        _S2, _U2) else "folded"
    d["tool_calls"] = _probe_tool_calls(tokenizer)
    d["tool_results"] = _probe_tool_results(tokenizer, d["tool_calls"] == NATIVE)
    with_tools = _text(tokenizer, [_user(_U1)], _PROBE_TOOLS)
    d["tools"] = NATIVE if with_tools is not None and _TOOL in with_tools else "system_prompt"
    strict = not _shows(tokenizer, [_user(_U1), _user(_U2)], _U1, _U2) or \
        not _shows(tokenizer, [_assistant(_A1), _user(_U1)], _A1, _U1)
    d["roles"] = "alternating" if strict else "free"
    return d


def _probe_tool_calls(tokenizer: Any) -> str:
    # Some templates insist a call be answered: try with a result, then without.
    call = _assistant("", [_CALL])
    for convo in ([_user(_U1), call, _tool_result(_RESULT)], [_user(_U1), call, _user(_U2)]):
        if _shows(tokenizer, convo, _TOOL, _ARG):
            return NATIVE
    return "assistant_text"


def _probe_tool_results(tokenizer: Any, native_calls: bool) -> str:
    call = _assistant("", [_CALL]) if native_calls else _assistant(_A1)
    ok = _shows(tokenizer, [_user(_U1), call, _tool_result(_RESULT)], _RESULT)
    return NATIVE if ok else "user_text"


def needs_adapting(dialect: dict) -> bool:
    return any(dialect.get(f) not in (None, NATIVE, "free") for f in FEATURES)


def widen(dialect: dict, messages: list, tools: Optional[list]) -> dict:
    """The dialect with every feature this conversation uses adapted (after a render failed)."""
    if dialect.get("template") == "unusable":
        return dialect  # nothing renders: rewriting cannot help
    used = {"roles", "system"}
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role == "system" and i > 0:
            used.add("mid_system")
        elif role == "tool":
            used.add("tool_results")
        elif role == "assistant" and m.get("tool_calls"):
            used.add("tool_calls")
    if tools:
        used.add("tools")
    return {**dialect, **{f: ADAPTED[f] for f in used}}


# ---------------------------------------------------------------------------------- adapt

def adapt(messages: list, tools: Optional[list], dialect: dict,
          call_format: str = CALL_FORMAT_JSON) -> tuple[list, Optional[list]]:
    """(messages, tools) rewritten to the dialect; both unchanged where it is all native."""
    if not needs_adapting(dialect):
        return messages, tools
    out = [dict(m) if isinstance(m, dict) else m for m in messages]
    if tools and dialect.get("tools") == "system_prompt":
        out = _tools_into_system(out, tools, call_format)
        tools = None
    if dialect.get("tool_calls") == "assistant_text":
        out = [_calls_as_text(m, call_format) for m in out]
    if dialect.get("tool_results") == "user_text":
        out = [_result_as_user(m) for m in out]
    if dialect.get("mid_system") == "folded":
        out = _fold_mid_system(out)
    if dialect.get("system") == "folded":
        out = _fold_leading_system(out)
    if dialect.get("roles") == "alternating":
        out = _alternate(out)
    return out, tools


def _role(m: Any) -> Optional[str]:
    return m.get("role") if isinstance(m, dict) else None


def _content(m: dict) -> str:
    c = m.get("content")
    return c if isinstance(c, str) else ("" if c is None else str(c))


def _tools_into_system(messages: list, tools: list, call_format: str) -> list:
    # After the system prompt: both are the same every turn, so the prefix stays stable.
    block = tools_text(tools, call_format)
    if messages and _role(messages[0]) == "system":
        first = messages[0]
        text = _content(first)
        return [{**first, "content": text + JOIN + block if text else block}, *messages[1:]]
    return [{"role": "system", "content": block}, *messages]


def tools_text(tools: list, call_format: str = CALL_FORMAT_JSON) -> str:
    """The tool definitions and how to call them, as system-prompt text (deterministic)."""
    lines = ["# Tools", "",
             "You can call these tools. Each line is one tool as JSON: its name, what it does, "
             "and the JSON schema of its arguments.", ""]
    lines += [json.dumps(_tool_entry(t), ensure_ascii=False, separators=(",", ":")) for t in tools]
    example = call_text("<tool name>", {"<argument>": "<value>"}, call_format)
    lines += ["", "To call a tool, answer with this, one block per call, and nothing after the "
              "last block:", example, "",
              "Each tool's result comes back in the next user turn, as "
              "\"Tool result (<call id>, <tool name>):\" followed by the output."]
    return "\n".join(lines)


def _tool_entry(tool: Any) -> dict:
    fn = tool.get("function", tool) if isinstance(tool, dict) else {}
    entry: dict[str, Any] = {"name": fn.get("name")}
    if fn.get("description"):
        entry["description"] = fn["description"]
    entry["parameters"] = fn.get("parameters") or {"type": "object", "properties": {}}
    return entry


def call_text(name: str, arguments: Any, call_format: str = CALL_FORMAT_JSON) -> str:
    """One tool call as the text the model is told to write."""
    body = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    if call_format == CALL_FORMAT_TAGS:
        return f"<tool_call>\n{body}\n</tool_call>"
    return f"```json\n{body}\n```"


def _calls_as_text(m: Any, call_format: str) -> Any:
    if _role(m) != "assistant" or not m.get("tool_calls"):
        return m
    parts = [_content(m)] if _content(m).strip() else []
    for call in m["tool_calls"]:
        fn = call.get("function", call) if isinstance(call, dict) else {}
        args = fn.get("arguments", {})
        if isinstance(args, str):  # OpenAI shape: a JSON string
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                pass
        parts.append(call_text(str(fn.get("name")), args, call_format))
    out = {k: v for k, v in m.items() if k != "tool_calls"}
    out["content"] = JOIN.join(parts)
    return out


def _result_as_user(m: Any) -> Any:
    if _role(m) != "tool":
        return m
    label = ", ".join(str(x) for x in (m.get("tool_call_id"), m.get("name")) if x)
    head = f"Tool result ({label}):" if label else "Tool result:"
    return {"role": "user", "content": f"{head}\n{_content(m)}"}


def _fold_mid_system(messages: list) -> list:
    """A system message after the first: into the user turn before it, else a user turn."""
    out: list = []
    for i, m in enumerate(messages):
        if _role(m) != "system" or i == 0:
            out.append(m)
            continue
        note = SYSTEM_NOTE + _content(m)
        if out and _role(out[-1]) == "user":
            # Appended (not prepended to the next turn): earlier turns never change later.
            out[-1] = {**out[-1], "content": _joined(_content(out[-1]), note)}
        else:
            out.append({"role": "user", "content": note})
    return out


def _fold_leading_system(messages: list) -> list:
    # As Gemma's own template does: the system text opens the first user turn.
    if not messages or _role(messages[0]) != "system":
        return messages
    system, rest = _content(messages[0]), messages[1:]
    if rest and _role(rest[0]) == "user":
        return [{**rest[0], "content": _joined(system, _content(rest[0]))}, *rest[1:]]
    return [{"role": "user", "content": system}, *rest]


def _alternate(messages: list) -> list:
    """Consecutive same-role turns merged; a user turn first (after a leading system)."""
    out: list = []
    for m in messages:
        if out and _role(out[-1]) == _role(m) and _role(m) in ("user", "assistant") \
                and _mergeable(out[-1], m):
            out[-1] = _merged(out[-1], m)
        else:
            out.append(m)
    head = 1 if out and _role(out[0]) == "system" else 0
    if len(out) > head and _role(out[head]) == "assistant":
        out.insert(head, {"role": "user", "content": ""})
    return out


def _mergeable(a: dict, b: dict) -> bool:
    # Native tool calls stay in their own message (the template renders them).
    return not a.get("tool_calls") and not b.get("tool_calls")


def _merged(a: dict, b: dict) -> dict:
    out = {**a, "content": _joined(_content(a), _content(b))}
    reasoning = [r for r in (a.get("reasoning_content"), b.get("reasoning_content")) if r]
    if reasoning:
        out["reasoning_content"] = JOIN.join(reasoning)
    return out


def _joined(a: str, b: str) -> str:
    return a + JOIN + b if a and b else a or b
