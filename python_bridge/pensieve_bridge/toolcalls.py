"""Tool-call parsers: mlx-lm's where it has one, plus a Llama 3.x JSON fallback.

A `ToolFormat` says how calls look in the output stream (start/end markers)
and how to turn the text between them into calls.
"""

from __future__ import annotations

import importlib
import json
import secrets
import string
from dataclasses import dataclass
from typing import Any, Callable, Optional

_ALNUM = string.ascii_letters + string.digits
LLAMA3_JSON = "llama3_json"
PYTHON_TAG = "<|python_tag|>"


def new_call_id() -> str:
    """Anthropic-style tool-use id: toolu_ + 24 random letters/digits."""
    return "toolu_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


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
    """[{"name", "arguments": dict}] from a call's text, or None when it is not valid."""
    try:
        out = fmt.parse(text, tools)
    except Exception:  # noqa: BLE001 - any parser failure means "not a call": text
        return None
    items = out if isinstance(out, list) else [out]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            return None
        args = item.get("arguments", {})
        if isinstance(args, str):  # some templates render arguments as a JSON string
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                return None
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return None
        calls.append({"name": item["name"], "arguments": args})
    return calls or None
