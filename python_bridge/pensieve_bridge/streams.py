"""stdout discipline and stdin reading for the worker.

The protocol owns the real stdout; everything else, including prints from
mlx-lm, transformers or C code writing to fd 1, lands on stderr.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from contextlib import contextmanager
from typing import Any, BinaryIO, Iterator, Optional

EOF_MARK = object()


class ProtocolOut:
    """Writes one JSON object per line to a private handle on the real stdout."""

    def __init__(self, handle: BinaryIO):
        self._handle = handle
        self._lock = threading.Lock()
        self._holding = 0  # > 0: inside held(); lines wait for its single flush

    def send(self, msg: dict[str, Any]) -> None:
        # ASCII-only lines (non-ASCII is \u-escaped): no chance of sending half
        # a UTF-8 sequence or a lone surrogate from a partial detokenization.
        line = json.dumps({"v": 1, **msg}, ensure_ascii=True, separators=(",", ":"))
        data = (line + "\n").encode("ascii")
        with self._lock:
            self._handle.write(data)
            if not self._holding:
                self._handle.flush()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Lines sent inside go out together, with one flush at the end (one batch step)."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            if not self._holding:
                with self._lock:
                    self._handle.flush()


def take_over_stdout() -> ProtocolOut:
    """Keeps fd 1 for the protocol and points fd 1 and sys.stdout at stderr."""
    sys.stdout.flush()
    proto_fd = os.dup(1)
    # fd-level redirect so C/C++ printf (MLX, tokenizers) cannot reach the protocol.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    handle = os.fdopen(proto_fd, "wb")  # buffered: write+flush never leaves half a line
    return ProtocolOut(handle)


def start_reader(stream: Optional[BinaryIO] = None) -> "queue.Queue[object]":
    """Reads stdin lines (bytes) into a queue on a daemon thread; EOF_MARK at the end."""
    inbox: "queue.Queue[object]" = queue.Queue()
    src = stream if stream is not None else sys.stdin.buffer

    def run() -> None:
        try:
            for line in src:
                if line.strip():
                    inbox.put(line)
        except (OSError, ValueError) as exc:
            print(f"[worker] stdin read failed: {type(exc).__name__}", file=sys.stderr)
        finally:
            inbox.put(EOF_MARK)

    threading.Thread(target=run, name="stdin-reader", daemon=True).start()
    return inbox
