"""Start-up, loading, shutdown and the command line."""

import os
import subprocess
import sys

from conftest import SERVER_LOAD, WORKER, load_fields, model_args

HI = [{"role": "user", "content": "hi"}]


def test_hello_then_not_loaded_then_load_failure_then_load(spawn, tiny_model, tmp_path):
    w = spawn()
    hello = w.raw_stdout[0]
    assert b'"type":"hello"' in hello
    assert f'"pid":{w.proc.pid}'.encode() in hello
    for cmd, fields in (("generate", {"messages": HI}), ("count_tokens", {"messages": HI})):
        err = w.request(cmd, **fields)
        assert err["type"] == "error" and err["code"] == "not_loaded"
    stats = w.request("stats")
    assert stats["model"] is None and stats["generating"] is None
    missing = w.load(str(tmp_path / "no-such-model"))
    assert missing["type"] == "error" and missing["code"] == "load_failed"
    loaded = w.load(str(tiny_model))
    assert loaded["type"] == "loaded" and loaded["model"] == str(tiny_model)
    assert w.request("stats")["model"] == str(tiny_model)
    bye = w.request("shutdown")
    assert bye["type"] == "bye"
    assert w.wait_exit() == 0


def test_model_flag_loads_at_start(spawn, tiny_model):
    w = spawn(args=model_args(tiny_model, cache_limit_gb=1))
    loaded = w.recv()
    assert loaded["type"] == "loaded" and loaded["id"] is None
    assert loaded["cache_limit_gb"] == 1
    assert w.generate(messages=HI, max_tokens=3)[-1]["type"] == "done"


def test_model_flag_needs_every_load_value(tiny_model):
    res = subprocess.run([sys.executable, str(WORKER), "--model", str(tiny_model),
                          "--cache-limit-gb", "1"], capture_output=True, timeout=60)
    assert res.returncode == 2 and res.stdout == b""
    error = res.stderr.decode().strip().splitlines()[-1]  # after argparse's usage lines
    for key in SERVER_LOAD:
        flag = "--" + key.replace("_", "-")
        assert (flag in error) == (key != "cache_limit_gb"), (key, error)


def test_load_needs_every_tuning_value(spawn, tiny_model):
    # The server (config.ts) always sends them; the worker has no defaults of its own.
    w = spawn()
    for key in SERVER_LOAD:
        fields = load_fields(tiny_model)
        del fields[key]
        err = w.request("load", **fields)
        assert err["type"] == "error" and err["code"] == "bad_request", err
        assert err["message"] == f"load needs {key}"
    assert w.request("stats")["model"] is None  # nothing was loaded


def test_stdin_eof_cancels_and_exits_cleanly(spawn, tiny_model):
    w = spawn(args=model_args(tiny_model))
    assert w.recv()["type"] == "loaded"
    gid = w.send("generate", messages=HI, max_tokens=10**9, temperature=0)
    w.until(lambda m: m.get("id") == gid and m["type"] == "delta")
    w.proc.stdin.close()
    assert w.wait_exit() == 0
    done = w.until(lambda m: m.get("id") == gid and m["type"] == "done")[-1]
    assert done["finish_reason"] == "cancelled"


def test_clear_cache_cli():
    res = subprocess.run([sys.executable, str(WORKER), "--clear-cache"], capture_output=True,
                         timeout=60, env=os.environ.copy())
    assert res.returncode == 0
    assert res.stdout == b""
    assert b"clear_cache command" in res.stderr
