"""Cancel inside a prefill chunk: llama.cpp's abort callback looks for our `cancel` in the inbox.

A chunk can take seconds (hundreds of tokens on a CPU). The worker answers `cancel` only
between steps, so ggml's abort callback (called between graph nodes, on this thread)
peeks at the commands waiting in the worker's inbox: when a cancel for this generation
(or the end of stdin) is there, the chunk stops at once and the step returns; the loop
then answers the cancel as usual and the next step ends the generation. Set for prefill
chunks only: per-node Python calls would cost a one-token step several percent.
"""

from __future__ import annotations

import ctypes as C
import json
from typing import Any, Optional

AbortCallback = C.CFUNCTYPE(C.c_bool, C.c_void_p)


class InboxWatch:
    """abort() is True once the inbox holds a cancel of `gid` (or EOF)."""

    def __init__(self, inbox: Any, gid: Any, eof_mark: Any):
        self.inbox, self.gid, self.eof = inbox, gid, eof_mark
        self._seen = 0  # inbox items already looked at (the queue only grows while we decode)
        self.hit = False
        self.callback = AbortCallback(self._on_check)  # kept alive while C may call it

    def _on_check(self, _data) -> bool:
        try:
            return self.abort()
        except Exception:  # noqa: BLE001 - never let an exception cross into C
            return False

    def abort(self) -> bool:
        if self.hit:
            return True
        q = self.inbox.queue
        if len(q) == self._seen:
            return False
        with self.inbox.mutex:
            items = list(q)
        fresh, self._seen = items[self._seen:] if len(items) >= self._seen else items, len(items)
        self.hit = any(self._is_ours(raw) for raw in fresh)
        return self.hit

    def _is_ours(self, raw: Any) -> bool:
        if raw is self.eof:
            return True
        if not isinstance(raw, (bytes, str)) or b"cancel" not in (raw if isinstance(raw, bytes) else raw.encode()):
            return False
        try:
            msg = json.loads(raw)
        except ValueError:
            return False
        return isinstance(msg, dict) and msg.get("cmd") == "cancel" and msg.get("target") == self.gid

    def reset(self) -> None:
        """Before each chunk: the loop has just drained the inbox; look at all of it."""
        self._seen = 0
        self.hit = False


def watch_for(host: Any, gid: Any) -> Optional[InboxWatch]:
    """A watch on the worker's inbox, or None for hosts without one (warm-up, benchmarks)."""
    inbox = getattr(host, "inbox", None)
    if inbox is None or not hasattr(inbox, "queue") or not hasattr(inbox, "mutex"):
        return None
    from ..streams import EOF_MARK

    return InboxWatch(inbox, gid, EOF_MARK)
