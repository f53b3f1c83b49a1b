"""Splits the streamed output into answer text, reasoning and tool calls.

Markers (think start/end, tool-call start/end) can arrive split across
fragments, so a tail that may be the start of a marker is held back.

When tools are offered, a line that may open a call in a generic form (a bare
`{"name": ...}` object, a list of them, or a ```json fence holding one; what
small models write whatever their template asks) is held back too, until it is
a complete JSON value (a call if it validates, else text) or clearly not a call.
Text after a call is dropped: the turn ends at its calls, and what a small model writes after a call is mostly an invented
result. Further calls right after it still count; prose after a call ends the
generation (`ended`).
"""

from __future__ import annotations

from typing import Optional

from .toolcalls import (LLAMA3_JSON, PYTHON_TAG, JsonScanner, ToolFormat, json_head,
                        parse_calls, parse_json_calls, tool_schemas)

Segment = tuple  # ("text" | "thinking", str) or ("call", {"name", "arguments"})

# Fence info strings that may hold a call; ```python etc. are code, released at once.
FENCE_LANGS = ("", "json", "tool_call", "xml")
_NO, _MAYBE = ("no", 0), ("maybe", 0)
# Tags a call's JSON may follow on its line when the family's own marker is another
# (llama.cpp's Hermes 2 Pro parser accepts these too); the family's marker wins.
GENERIC_TAGS = ("<tool_call>", "<function_call>", "<tools>", "<json>", "<response>")


def _held_prefix(buf: str, markers: list[str]) -> int:
    """Length of the longest tail of buf that is a proper prefix of a marker."""
    best = 0
    for m in markers:
        for n in range(min(len(m) - 1, len(buf)), best, -1):
            if buf.endswith(m[:n]):
                best = n
                break
    return best


def _skip(s: str, i: int, chars: str) -> int:
    while i < len(s) and s[i] in chars:
        i += 1
    return i


class OutputSplitter:
    """feed(text) -> segments; finish() flushes what is held at the end of the turn.

    tools: the request's tools when calls are parsed (None: tool_choice none, or none
    offered); calls are checked against them and generic JSON forms are looked for."""

    def __init__(self, fmt: Optional[ToolFormat] = None, tools: Optional[list] = None,
                 think: Optional[tuple[str, str]] = None, in_think: bool = False,
                 forced: Optional[str] = None):
        self.fmt = fmt
        self.tools = tools
        self.schemas = tool_schemas(tools)
        self.think = think
        self.state = "think" if (in_think and think) else "text"
        self.buf = ""
        self.call_count = 0
        self.ended = False  # prose came after a call: no more calls expected, stop generating
        # Llama 3.x: a call is the whole answer, so hold the answer while it may be one.
        self._whole_possible = fmt is not None and fmt.name == LLAMA3_JSON
        self._strip_lead = False  # drop the blank line a model writes after </think>
        self._line_start = True  # buf[0] begins a line (the answer's start does)
        self._hidden: Optional[int] = None  # forced: leading chars of the call Pensieve injected
        self._lead = ""  # a fence opener hidden before a tagged call (text again if it fails)
        self._scan: Optional[JsonScanner] = None
        self._json_at = 0  # where the held candidate's JSON starts in buf
        if forced is not None and fmt is not None:
            if fmt.name == LLAMA3_JSON:
                self.state, self.buf = "whole", forced
                self._hidden = len(forced)
            else:
                self.state, self.buf = "call", forced[len(fmt.start):]
                self._hidden = len(self.buf)

    # -- public -------------------------------------------------------------------

    def feed(self, text: str) -> list[Segment]:
        self.buf += text
        out: list[Segment] = []
        while self._step(out):
            pass
        return out

    def finish(self) -> list[Segment]:
        out: list[Segment] = []
        buf, self.buf = self.buf, ""
        if self.state == "think":
            self._emit(out, "thinking", buf)
        elif self.state == "call":
            # No end marker (Mistral, or a model that ends the turn right after
            # the JSON): parse what is there; an unfinished call becomes text.
            self._close_call(out, buf, closed=False)
        elif self.state == "whole":
            self._close_whole(out, buf)
        elif self.state == "cand":
            self._close_cand(out, buf)
        else:
            self._emit(out, "text", buf)
        self.state = "text"
        return out

    # -- states ---------------------------------------------------------------------

    def _step(self, out: list[Segment]) -> bool:
        """Handles buf in the current state; True when it should run again."""
        if self.state == "text":
            return self._text(out)
        if self.state == "cand":
            return self._cand(out)
        if self.state == "think":
            end = self.think[1]
            i = self.buf.find(end)
            if i < 0:
                keep = _held_prefix(self.buf, [end])
                self._emit(out, "thinking", self.buf[: len(self.buf) - keep])
                self.buf = self.buf[len(self.buf) - keep:]
                return False
            self._emit(out, "thinking", self.buf[:i])
            self.buf = self.buf[i + len(end):]
            self.state, self._strip_lead, self._line_start = "text", True, True
            return True
        if self.state == "call" and self.fmt.end:
            i = self.buf.find(self.fmt.end)
            if i < 0:
                return False
            body, self.buf = self.buf[:i], self.buf[i + len(self.fmt.end):]
            self.state, self._line_start = "text", False
            self._close_call(out, body, closed=True)
            return True
        return False  # call without end marker, or whole: hold to the end

    def _text(self, out: list[Segment]) -> bool:
        if self._whole_possible:
            lead = self.buf.lstrip()
            if not lead or PYTHON_TAG.startswith(lead):
                return False  # not known yet
            self._whole_possible = False
            if lead.startswith("{") or lead.startswith(PYTHON_TAG):
                self.state = "whole"
                return False
        markers = self._markers()
        hits = [(i, m) for i, m in ((self.buf.find(m), m) for m in markers) if i >= 0]
        first = min(hits) if hits else None
        if self.schemas is not None and self._candidate(out, first[0] if first else len(self.buf)):
            return self.state != "text"
        if first is None:
            keep = _held_prefix(self.buf, markers)
            self._text_out(out, self.buf[: len(self.buf) - keep])
            self.buf = self.buf[len(self.buf) - keep:]
            return False
        i, m = first
        self._text_out(out, self.buf[:i])
        self.buf = self.buf[i + len(m):]
        self.state = "think" if (self.think and m == self.think[0]) else "call"
        return True

    def _candidate(self, out: list[Segment], limit: int) -> bool:
        """Finds the first line before limit that may open a generic call.

        True when one was found: text before it is out, and buf starts at it (held, or
        in "cand" state, or at a tagged call whose fence opener is hidden)."""
        for pos in self._line_starts(limit):
            kind, at = self._classify(self.buf[pos:])
            if kind == "no":
                continue
            self._text_out(out, self.buf[:pos])
            self.buf = self.buf[pos:]
            if kind == "json":
                self.state, self._json_at, self._scan = "cand", at, JsonScanner()
            elif kind == "tag":  # ```xml\n<tool_call>: the fence opener is no text
                self._lead, self.buf = self.buf[:at], self.buf[at + len(self.fmt.start):]
                self.state, self._line_start = "call", False
            return True
        return False

    def _line_starts(self, limit: int):
        if self._line_start and limit > 0:
            yield 0
        i = self.buf.find("\n", 0, limit)
        while 0 <= i < limit - 1:
            yield i + 1
            i = self.buf.find("\n", i + 1, limit)

    def _classify(self, s: str) -> tuple[str, int]:
        """("json", offset of the JSON) / ("tag", offset of the marker) / maybe / no."""
        i = _skip(s, 0, " \t")
        rest = s[i:]
        if not rest:
            return _MAYBE
        if rest.startswith("```"):
            return self._classify_fence(rest, i)
        if "```".startswith(rest):
            return _MAYBE
        for tag in GENERIC_TAGS:
            if rest.startswith(tag):
                return self._classify_json(rest, i, _skip(rest, len(tag), " \t\r\n"))
            if tag.startswith(rest):
                return _MAYBE
        return self._classify_json(rest, i, 0)

    @staticmethod
    def _classify_json(rest: str, i: int, j: int) -> tuple[str, int]:
        inner = rest[j:]
        if not inner:
            return _MAYBE
        head = json_head(inner) if inner[0] in "{[" else "no"
        return ("json", i + j) if head == "yes" else (_MAYBE if head == "maybe" else _NO)

    def _classify_fence(self, rest: str, i: int) -> tuple[str, int]:
        nl = rest.find("\n")
        lang = (rest[3:] if nl < 0 else rest[3:nl]).strip().lower()
        if nl < 0:
            return _MAYBE if any(f.startswith(lang) for f in FENCE_LANGS) else _NO
        if lang not in FENCE_LANGS:
            return _NO
        j = _skip(rest, nl + 1, " \t\r\n")
        inner = rest[j:]
        start = self.fmt.start if self.fmt is not None else ""
        if not inner or (start and start.startswith(inner)):
            return _MAYBE
        if start and inner.startswith(start):
            return ("tag", i + j)
        return self._classify_json(rest, i, j)

    def _cand(self, out: list[Segment]) -> bool:
        res = self._scan.advance(self.buf[self._json_at:])
        if res is None:
            return False  # not complete yet: hold
        # res -1: a closer that matches nothing, so not JSON: text up to it.
        end = self._json_at + (res if res > 0 else self._scan.pos)
        calls = parse_json_calls(self.buf[self._json_at:end], self.schemas) if res > 0 else None
        self.state, self._scan = "text", None
        if calls is None:  # not a call: the held text is text, and scanning goes on after it
            self._text_out(out, self.buf[:end])
        else:
            self._add_calls(out, calls)
        self.buf = self.buf[end:]
        self._line_start = False
        return True

    # -- helpers --------------------------------------------------------------------

    def _markers(self) -> list[str]:
        markers = []
        if self.think:
            markers.append(self.think[0])
        if self.fmt is not None and self.fmt.start:
            markers.append(self.fmt.start)
        return markers

    def _text_out(self, out: list[Segment], text: str) -> None:
        """Answer text leaving the splitter; tracks whether the next text starts a line."""
        if text:
            self._line_start = text.endswith("\n")
            self._emit(out, "text", text)

    def _emit(self, out: list[Segment], kind: str, text: str) -> None:
        if kind == "text" and self.call_count:
            # Text after a call is dropped (module docstring); prose, not just the
            # closing fence, means the model has moved on: the turn can end.
            self.ended = self.ended or bool(text.strip(" \t\r\n`"))
            return
        if kind == "text" and self._strip_lead:
            text = text.lstrip()
            if text:
                self._strip_lead = False
        if text:
            out.append((kind, text))

    def _add_calls(self, out: list[Segment], calls: list[dict]) -> None:
        for call in calls:
            self.call_count += 1
            out.append(("call", call))

    def _close_call(self, out: list[Segment], body: str, closed: bool) -> None:
        calls = parse_calls(self.fmt, body.strip(), self.tools)
        lead, self._lead = self._lead, ""
        hidden, self._hidden = self._hidden, None
        if calls is not None:
            self._add_calls(out, calls)
            return
        # Not a valid call: give the model's text back, markers included; what
        # Pensieve injected to force the call never comes back as text.
        model_text = self.fmt.start + body if hidden is None else body[hidden:]
        self._emit(out, "text", lead + model_text + (self.fmt.end if closed else ""))

    def _close_whole(self, out: list[Segment], body: str) -> None:
        calls = parse_calls(self.fmt, body, self.tools)
        hidden, self._hidden = self._hidden or 0, None
        if calls is None:
            self._emit(out, "text", body[hidden:])
            return
        self._add_calls(out, calls)

    def _close_cand(self, out: list[Segment], buf: str) -> None:
        # The output ended inside a candidate: repair it if that is unambiguous.
        calls = parse_json_calls(buf[self._json_at:], self.schemas, repair=True)
        self._scan = None
        if calls is None:
            self._emit(out, "text", buf)
        else:
            self._add_calls(out, calls)
