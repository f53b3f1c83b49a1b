"""Fault injection for tests, chosen by PENSIEVE_WORKER_FAULT (comma-separated).

- noise: something writes to stdout (print, fd 1, C printf) on every command
  and after the first token; the protocol must stay clean.
- generate_error: a generation raises after its first token (error, no done).
- crash: the worker exits abruptly (code 70) after a generation's first token.
Unset in normal use; never enabled by the server on its own.
"""

from __future__ import annotations

import ctypes
import os
import sys
from contextlib import contextmanager
from typing import Iterator

_FAULTS = {f.strip() for f in os.environ.get("PENSIEVE_WORKER_FAULT", "").split(",") if f.strip()}


def enabled(name: str) -> bool:
    return name in _FAULTS


@contextmanager
def suspended() -> Iterator[None]:
    """No injected faults inside: the load's warm-up is not a request under test."""
    saved = set(_FAULTS)
    _FAULTS.clear()
    try:
        yield
    finally:
        _FAULTS.update(saved)


def make_noise(where: str) -> None:
    if not enabled("noise"):
        return
    print(f"noise from print ({where})")  # sys.stdout: redirected to stderr
    os.write(1, f"noise from fd 1 ({where})\n".encode())
    try:
        libc = ctypes.CDLL(None)
        libc.printf(f"noise from C printf ({where})\n".encode())
        libc.fflush(None)
    except (OSError, AttributeError):
        pass
    sys.stderr.flush()


def after_first_token() -> None:
    make_noise("first token")
    if enabled("crash"):
        print("[worker] fault injection: crashing now", file=sys.stderr, flush=True)
        os._exit(70)
    if enabled("generate_error"):
        raise RuntimeError("fault injection: generate_error")
