"""Reading one command line: shared by the model worker and the token counter."""

from __future__ import annotations

import json
from typing import Callable, Optional

from . import PROTOCOL_VERSION
from .errors import bad_request


def parse_command(raw: bytes, send: Callable[[dict], None]) -> Optional[dict]:
    """A command dict, or None after answering a malformed line with an error."""
    try:
        msg = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        send({"type": "error", "id": None, "code": "bad_request", "message": "line is not valid JSON"})
        return None
    if not isinstance(msg, dict):
        send(bad_request("a command must be a JSON object").reply(None))
        return None
    cmd_id = msg.get("id")
    if not isinstance(cmd_id, (str, int)) or isinstance(cmd_id, bool):
        send(bad_request("a command needs an id (string)").reply(None))
        return None
    if msg.get("v", PROTOCOL_VERSION) != PROTOCOL_VERSION:
        send(bad_request(f"unsupported protocol version {msg.get('v')!r}; "
                         f"this worker speaks {PROTOCOL_VERSION}").reply(cmd_id))
        return None
    if not isinstance(msg.get("cmd"), str):
        send(bad_request("a command needs a cmd (string)").reply(cmd_id))
        return None
    return msg
