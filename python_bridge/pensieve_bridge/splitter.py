"""Splits the streamed output into answer text, reasoning and tool calls.

Markers (think start/end, tool-call start/end) can arrive split across
fragments, so a tail that may be the start of a marker is held back.
"""

from __future__ import annotations

from typing import Optional

from .toolcalls import LLAMA3_JSON, PYTHON_TAG, ToolFormat, parse_calls

Segment = tuple  # ("text" | "thinking", str) or ("call", {"name", "arguments"})


def _held_prefix(buf: str, markers: list[str]) -> int:
    """Length of the longest tail of buf that is a proper prefix of a marker."""
    best = 0
    for m in markers:
        for n in range(min(len(m) - 1, len(buf)), best, -1):
            if buf.endswith(m[:n]):
                best = n
                break
    return best


class OutputSplitter:
    """feed(text) -> segments; finish() flushes what is held at the end of the turn."""

    def __init__(self, fmt: Optional[ToolFormat] = None, tools: Optional[list] = None,
                 think: Optional[tuple[str, str]] = None, in_think: bool = False,
                 forced: Optional[str] = None):
        self.fmt = fmt
        self.tools = tools
        self.think = think
        self.state = "think" if (in_think and think) else "text"
        self.buf = ""
        self.call_count = 0
        # Llama 3.x: a call is the whole answer, so hold the answer while it may be one.
        self._whole_possible = fmt is not None and fmt.name == LLAMA3_JSON
        self._strip_lead = False  # drop the blank line a model writes after </think>
        if forced is not None and fmt is not None:
            if fmt.name == LLAMA3_JSON:
                self.state, self.buf = "whole", forced
            else:
                self.state, self.buf = "call", forced[len(fmt.start):]

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
        else:
            self._emit(out, "text", buf)
        self.state = "text"
        return out

    # -- states ---------------------------------------------------------------------

    def _step(self, out: list[Segment]) -> bool:
        """Handles buf in the current state; True when it should run again."""
        if self.state == "text":
            return self._text(out)
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
            self.state, self._strip_lead = "text", True
            return True
        if self.state == "call" and self.fmt.end:
            i = self.buf.find(self.fmt.end)
            if i < 0:
                return False
            body, self.buf = self.buf[:i], self.buf[i + len(self.fmt.end):]
            self.state = "text"
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
        markers = []
        if self.think:
            markers.append(self.think[0])
        if self.fmt is not None and self.fmt.start:
            markers.append(self.fmt.start)
        hits = [(self.buf.find(m), m) for m in markers]
        hits = [(i, m) for i, m in hits if i >= 0]
        if not hits:
            keep = _held_prefix(self.buf, markers)
            self._emit(out, "text", self.buf[: len(self.buf) - keep])
            self.buf = self.buf[len(self.buf) - keep:]
            return False
        i, m = min(hits)
        self._emit(out, "text", self.buf[:i])
        self.buf = self.buf[i + len(m):]
        if self.think and m == self.think[0]:
            self.state = "think"
        else:
            self.state = "call"
        return True

    # -- helpers --------------------------------------------------------------------

    def _emit(self, out: list[Segment], kind: str, text: str) -> None:
        if kind == "text" and self._strip_lead:
            text = text.lstrip()
            if text:
                self._strip_lead = False
        if text:
            out.append((kind, text))

    def _close_call(self, out: list[Segment], body: str, closed: bool) -> None:
        calls = parse_calls(self.fmt, body.strip(), self.tools)
        if calls is None:  # not a valid call: give the text back, markers included
            self._emit(out, "text", self.fmt.start + body + (self.fmt.end if closed else ""))
            return
        for call in calls:
            self.call_count += 1
            out.append(("call", call))

    def _close_whole(self, out: list[Segment], body: str) -> None:
        calls = parse_calls(self.fmt, body, self.tools)
        if calls is None:
            self._emit(out, "text", body)
            return
        for call in calls:
            self.call_count += 1
            out.append(("call", call))
