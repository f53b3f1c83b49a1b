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
    # Anthropic's exact wording: Claude Code reacts to it by compacting.
    return WorkerError("prompt_too_long",
                       f"prompt is too long: {tokens} tokens > {maximum} maximum",
                       prompt_tokens=tokens, max_context=maximum)
