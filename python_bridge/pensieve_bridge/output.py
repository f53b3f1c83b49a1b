"""A generation's text as protocol events: reasoning, answer text and tool calls."""

from __future__ import annotations

from typing import Any, Optional

from .splitter import OutputSplitter
from .stops import StopMatcher


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
