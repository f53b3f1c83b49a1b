"""Fixtures: the tiny model (made once per session) and real worker processes."""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

BRIDGE = Path(__file__).resolve().parents[1]
WORKER = BRIDGE / "mlx_inference.py"
MAKE_TINY = BRIDGE / "make_tiny_model.py"
sys.path.insert(0, str(BRIDGE))  # unit tests import pensieve_bridge directly

TIMEOUT = 30.0  # generous per-message wait: a failure, never a timing assertion
# The server's load values (its src/config.ts holds every default): the worker requires them.
SERVER_LOAD = {"cache_limit_gb": 5, "prompt_cache_entries": 4, "prompt_cache_gb": 2,
               "max_batch": 4, "max_output_tokens": 8192, "loop_guard_tokens": 160,
               "coalesce_ms": 4}


def load_fields(model: Any, **fields: Any) -> dict:
    """A load command's fields as the server sends them, with a test's own changes."""
    return {**SERVER_LOAD, "model": str(model), **fields}


def model_args(model: Any, **fields: Any) -> list[str]:
    """mlx_inference.py's --model command line, with the same values as load_fields."""
    values = {**SERVER_LOAD, **fields}
    return ["--model", str(model), *(a for key, val in values.items()
                                     for a in ("--" + key.replace("_", "-"), str(val)))]


class WorkerProc:
    """The real worker as a subprocess; stdout lines must all be protocol JSON."""

    def __init__(self, args: Optional[list[str]] = None, env: Optional[dict] = None):
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), *(args or [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})}, cwd=str(BRIDGE.parent),
        )
        self.messages: "queue.Queue[dict]" = queue.Queue()
        self.raw_stdout: list[bytes] = []
        self.bad_lines: list[bytes] = []
        self.stderr_lines: list[str] = []
        self._ids = itertools.count(1)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        for line in self.proc.stdout:
            self.raw_stdout.append(line)
            try:
                msg = json.loads(line)
                assert isinstance(msg, dict) and msg.get("v") == 1
            except (ValueError, AssertionError):
                self.bad_lines.append(line)
                continue
            self.messages.put(msg)

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr_lines.append(line.decode("utf-8", "replace"))

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def send_raw(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def send(self, cmd: str, **fields: Any) -> str:
        cmd_id = fields.pop("id", None) or f"t{next(self._ids)}"
        self.send_raw(json.dumps({"v": 1, "id": cmd_id, "cmd": cmd, **fields}))
        return cmd_id

    def recv(self, timeout: float = TIMEOUT) -> dict:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout}s; stderr:\n{self.stderr[-3000:]}")

    def until(self, pred: Callable[[dict], bool], timeout: float = TIMEOUT) -> list[dict]:
        """Messages up to and including the first that satisfies pred."""
        seen = []
        while True:
            msg = self.recv(timeout)
            seen.append(msg)
            if pred(msg):
                return seen

    def request(self, cmd: str, **fields: Any) -> dict:
        """Sends a command and returns its single reply (error replies included)."""
        cmd_id = self.send(cmd, **fields)
        return self.until(lambda m: m.get("id") == cmd_id)[-1]

    def load(self, model: Any, **fields: Any) -> dict:
        """Sends load with the server's values (load_fields) and returns its reply."""
        return self.request("load", **load_fields(model, **fields))

    def generate(self, **fields: Any) -> list[dict]:
        """All messages of one generation, through its done or error."""
        gid = self.send("generate", **fields)
        return self.until(lambda m: m.get("id") == gid and m["type"] in ("done", "error"))

    def wait_exit(self, timeout: float = TIMEOUT) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """Stops this process (by its pid) if it is still running."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-model")
    subprocess.run([sys.executable, str(MAKE_TINY), str(out)], check=True, timeout=120)
    return out


@pytest.fixture
def spawn():
    """Starts workers for one test and stops every one of them afterwards."""
    started: list[WorkerProc] = []

    def make(args: Optional[list[str]] = None, env: Optional[dict] = None) -> WorkerProc:
        w = WorkerProc(args, env)
        started.append(w)
        hello = w.recv()
        assert hello["type"] == "hello", hello
        return w

    yield make
    for w in started:
        w.stop()


@pytest.fixture(scope="module")
def worker(tiny_model):
    """One loaded worker shared by a module's tests (each leaves it idle)."""
    w = WorkerProc()
    assert w.recv()["type"] == "hello"
    loaded = w.load(tiny_model)
    assert loaded["type"] == "loaded", loaded
    yield w
    w.stop()
    assert not w.bad_lines, f"non-protocol stdout lines: {w.bad_lines[:5]}"


@pytest.fixture(scope="module")
def batch_worker(tiny_model):
    """A worker that batches up to 4 generations, with no prompt cache (one per test module)."""
    w = WorkerProc()
    assert w.recv()["type"] == "hello"
    loaded = w.load(tiny_model, max_batch=4, prompt_cache_entries=0)
    assert loaded["type"] == "loaded" and loaded["max_concurrency"] == 4, loaded
    yield w
    w.stop()
    assert not w.bad_lines


def wait_for(pred: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()
