"""Tool-call parsers: mlx-lm's where it has one, a Llama 3.x JSON fallback, and the
generic JSON forms small models write whatever their template asks for.

A `ToolFormat` says how calls look in the output stream (start/end markers)
and how to turn the text between them into calls. Every candidate, whatever its
form, becomes a call only when its name is one of the request's tools and its
arguments conform to that tool's schema (`check_calls`); anything else is text.

The generic forms follow llama.cpp's Hermes 2 Pro parser (an optional ```json
fence, then `{"name": ...`) and Ollama's (a bare JSON object may be a call).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .jsonschema_lite import Invalid, conform

LLAMA3_JSON = "llama3_json"
PYTHON_TAG = "<|python_tag|>"


@dataclass
class ToolFormat:
    name: str
    start: str  # marker opening a call ("" for llama3_json: the whole answer)
    end: str  # marker closing a call ("" = runs to the end of the turn)
    parse: Callable[[str, Optional[list]], Any]

    def forced_prefix(self, tool: Optional[str]) -> str:
        """Text appended to the generation prompt to force a call (to `tool`)."""
        if self.name == LLAMA3_JSON:
            return '{"name": "' + (f'{tool}", "parameters": ' if tool else "")
        if not tool:
            return self.start
        if self.name == "qwen3_coder":
            return f"{self.start}\n<function={tool}>\n"
        if self.name == "mistral":
            return f"{self.start}{tool}[ARGS]"
        if self.name == "json_tools":
            return f'{self.start}\n{{"name": "{tool}", "arguments": '
        return self.start


def mlx_format(name: str) -> Optional[ToolFormat]:
    """mlx-lm's parser module `mlx_lm.tool_parsers.<name>`, or None."""
    if name == LLAMA3_JSON:
        return ToolFormat(LLAMA3_JSON, "", "", parse_llama3_json)
    try:
        mod = importlib.import_module(f"mlx_lm.tool_parsers.{name}")
    except ImportError:
        return None
    return ToolFormat(name, mod.tool_call_start, mod.tool_call_end or "", mod.parse_tool_call)


def format_for(tokenizer: Any) -> Optional[ToolFormat]:
    """The tool format of a loaded mlx-lm TokenizerWrapper, or None."""
    start = getattr(tokenizer, "tool_call_start", None)
    parser = getattr(tokenizer, "tool_parser", None)
    if start is not None and parser is not None:
        inner = getattr(tokenizer, "_tokenizer", tokenizer)
        name = getattr(inner, "init_kwargs", {}).get("tool_parser_type") or "mlx"
        return ToolFormat(name, start, getattr(tokenizer, "tool_call_end", None) or "", parser)
    if is_llama3_template(getattr(tokenizer, "chat_template", None)):
        return mlx_format(LLAMA3_JSON)
    return None


def is_llama3_template(tpl: Any) -> bool:
    # Llama 3.1/3.2/3.3 JSON tool calling; mlx-lm has no markers for it.
    return (isinstance(tpl, str) and "<|start_header_id|>" in tpl
            and '"parameters"' in tpl and "tools" in tpl)


def parse_llama3_json(text: str, tools: Optional[list] = None) -> Any:
    """`{"name": X, "parameters": {...}}` (or "arguments"), several joined by `;`."""
    body = text.strip()
    if body.startswith(PYTHON_TAG):
        body = body[len(PYTHON_TAG):].strip()
    decoder = json.JSONDecoder()
    calls, pos = [], 0
    while pos < len(body):
        obj, pos = decoder.raw_decode(body, pos)
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            raise ValueError("not a tool call")
        args = obj.get("parameters", obj.get("arguments", {}))
        calls.append({"name": obj["name"], "arguments": args})
        while pos < len(body) and body[pos] in " \t\r\n;":
            pos += 1
    if not calls:
        raise ValueError("no tool call")
    return calls[0] if len(calls) == 1 else calls


def parse_calls(fmt: ToolFormat, text: str, tools: Optional[list]) -> Optional[list[dict]]:
    """[{"name", "arguments": dict}] from a call's text, or None when it is not valid.

    The family's parser first; if it fails, the body read as generic JSON (repaired
    where unambiguous): a <tool_call> body missing its last brace is still the call."""
    schemas = tool_schemas(tools)
    try:
        out = fmt.parse(text, tools)
    except Exception:  # noqa: BLE001 - any parser failure means "not a call" (yet)
        out = None
    if out is not None:
        calls = check_calls(out if isinstance(out, list) else [out], schemas)
        if calls:
            return calls
    return parse_json_calls(text, schemas, repair=True)


# -- validation -------------------------------------------------------------------

_ARG_KEYS = ("arguments", "parameters", "input")
# First keys a call object may open with; any other first key means "not a call".
CALL_KEYS = ("name", "function", "type", "arguments", "parameters")


def tool_schemas(tools: Optional[list]) -> Optional[dict[str, Any]]:
    """{tool name: its parameters schema} from OpenAI-shaped tools; None = no tools known."""
    if not tools:
        return None
    out: dict[str, Any] = {}
    for t in tools:
        fn = t.get("function", t) if isinstance(t, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            out[fn["name"]] = fn.get("parameters") or fn.get("input_schema") or {}
    return out


def _normalize(item: Any) -> Optional[dict]:
    """{"name", "arguments": dict} from the shapes models write, or None."""
    if not isinstance(item, dict):
        return None
    if isinstance(item.get("function"), dict):  # OpenAI: {"type": "function", "function": {...}}
        item = item["function"]
    name = item.get("name")
    if not isinstance(name, str) or not name:
        return None
    args = next((item[k] for k in _ARG_KEYS if k in item), {})
    if isinstance(args, str):  # some templates render arguments as a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return None
    if args is None:
        args = {}
    return {"name": name, "arguments": args} if isinstance(args, dict) else None


def check_calls(items: list, schemas: Optional[dict]) -> Optional[list[dict]]:
    """The calls, normalized and conformed to their tools' schemas; None if any is not valid."""
    calls = []
    for item in items:
        call = _normalize(item)
        if call is None:
            return None
        if schemas is not None:
            if call["name"] not in schemas:
                return None
            try:
                call["arguments"] = conform(call["arguments"], schemas[call["name"]])
            except Invalid:
                return None
        calls.append(call)
    return calls or None


# -- generic JSON forms -------------------------------------------------------------

def json_head(s: str) -> str:
    """"yes" / "maybe" / "no": may s (from a `{` or `[`) open a call object?

    Decided on the first key, so a JSON answer that is not a call streams at once."""
    if s.startswith("{{"):  # doubled braces (template-literal habit), undone by _variants
        return json_head(s[1:])
    i = 0
    if s.startswith("["):
        i = _skip_ws(s, 1)
        if i == len(s):
            return "maybe"
    if i >= len(s) or s[i] != "{":
        return "no"
    i = _skip_ws(s, i + 1)
    if i == len(s):
        return "maybe"
    if s[i] != '"':
        return "no"
    close = s.find('"', i + 1)
    if close < 0:
        key = s[i + 1:]
        return "maybe" if any(k.startswith(key) for k in CALL_KEYS) else "no"
    return "yes" if s[i + 1:close] in CALL_KEYS else "no"


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t\r\n":
        i += 1
    return i


class JsonScanner:
    """Finds where a JSON object/array starting at text[0] ends, incrementally.

    advance(text) -> end index (complete), None (not yet) or -1 (a closer that does
    not match: not JSON). Only brackets outside strings count."""

    def __init__(self) -> None:
        self.pos, self.stack, self.in_str, self.esc = 0, [], False, False
        self.closes: list[int] = []  # positions just after each closer, for repairs

    def advance(self, text: str) -> Optional[int]:
        while self.pos < len(text):
            c = text[self.pos]
            self.pos += 1
            if self.in_str:
                if self.esc:
                    self.esc = False
                elif c == "\\":
                    self.esc = True
                elif c == '"':
                    self.in_str = False
            elif c == '"':
                self.in_str = True
            elif c in "{[":
                self.stack.append("}" if c == "{" else "]")
            elif c in "}]":
                if not self.stack or self.stack.pop() != c:
                    return -1
                self.closes.append(self.pos)
                if not self.stack:
                    return self.pos
        return None

    def closers(self) -> Optional[str]:
        """What closes the text so far; None inside a string (where it ends is a guess)."""
        return None if self.in_str else "".join(reversed(self.stack))


def parse_json_calls(text: str, schemas: Optional[dict], repair: bool = False) -> Optional[list[dict]]:
    """Calls from a JSON object or list of them; None when it is not valid calls.

    repair: also accept the complete value followed by trailing text, and a value
    whose last closing braces/brackets are missing (the output ended first)."""
    for body in _variants(text.strip(), repair):
        try:
            obj = json.loads(body)
        except ValueError:
            continue
        calls = check_calls(obj if isinstance(obj, list) else [obj], schemas)
        if calls:
            return calls
    return None


def _variants(text: str, repair: bool):
    yield text
    if text.startswith("{{") and text.endswith("}}"):  # {{"name": ...}} (Qwen2.5-Coder-1.5B)
        yield text[1:-1]
    if not repair or text[:1] not in ("{", "["):
        return
    scan = JsonScanner()
    end = scan.advance(text)
    if end is not None:  # complete (trailing text after it) or malformed
        if end > 0 and end < len(text):
            yield text[:end]
        return
    closers = scan.closers()
    if closers:
        yield text.rstrip() + closers
    for cut in reversed(scan.closes[-3:]):  # text after the last closer (a fence, prose)
        part = JsonScanner()
        part.advance(text[:cut])
        more = part.closers()
        if more:
            yield text[:cut] + more
