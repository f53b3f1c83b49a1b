"""Coalescing of a generation's streamed text events.

One protocol line (and one SSE event in the server) per token costs a few
hundred microseconds, which is most of a token on a small, fast model. A
generation's `delta` (and `thinking`) text is therefore sent at once when the
previous send of that generation was at least `window` seconds ago, and is
otherwise held and joined with what follows. So a slow model (a token per
window or slower) still streams every token the moment it exists, and the first
text of a generation is never held.
"""

from __future__ import annotations

import time
from typing import Any, Callable

_MERGED = ("delta", "thinking")

Send = Callable[[dict], None]


class Coalescer:
    """Holds one generation's text events; `push` keeps event order."""

    __slots__ = ("gid", "window", "kind", "parts", "last")

    def __init__(self, gid: Any, window: float):
        self.gid = gid
        self.window = window
        self.kind = ""  # "delta" | "thinking" while parts are held
        self.parts: list[str] = []
        self.last = float("-inf")  # when this generation last sent text

    @property
    def holding(self) -> bool:
        return bool(self.parts)

    def push(self, send: Send, events: list[dict], now: float) -> None:
        """Sends or holds the events of one token, then sends what is due."""
        for ev in events:
            kind = ev["type"]
            if kind in _MERGED:
                if self.parts and kind != self.kind:
                    self.flush(send, now)
                self.kind = kind
                self.parts.append(ev["text"])
            else:  # tool_call and anything else: never reordered past held text
                self.flush(send, now)
                send(ev)
        self.tick(send, now)

    def tick(self, send: Send, now: float) -> None:
        """Sends held text once the window since the last send has passed."""
        if self.parts and now - self.last >= self.window:
            self.flush(send, now)

    def flush(self, send: Send, now: float | None = None) -> None:
        """Sends held text now (before done, error, cancel, or any other event)."""
        if not self.parts:
            return
        text = self.parts[0] if len(self.parts) == 1 else "".join(self.parts)
        self.parts = []
        send({"type": self.kind, "id": self.gid, "text": text})
        self.last = time.perf_counter() if now is None else now
