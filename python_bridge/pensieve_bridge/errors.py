"""Typed failures that become protocol `error` replies."""

from __future__ import annotations

from typing import Any


class WorkerError(Exception):
    """A command failed; `code` is one of PROTOCOL.md's error codes."""

    def __init__(self, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra

    def reply(self, cmd_id: Any) -> dict:
        return {"type": "error", "id": cmd_id, "code": self.code,
                "message": self.message, **self.extra}


def bad_request(message: str) -> WorkerError:
    return WorkerError("bad_request", message)


def prompt_too_long(tokens: int, maximum: int) -> WorkerError:
    # Numbers and a neutral message: the server words it for its API's clients.
    return WorkerError("prompt_too_long",
                       f"prompt has {tokens} tokens; the context holds {maximum}",
                       prompt_tokens=tokens, max_context=maximum)
