"""MLX cache hygiene after every generation, and stdout discipline."""

import json
import re

from conftest import wait_for

HI = [{"role": "user", "content": "hi"}]
MEM_LINE = re.compile(
    r"memory after generate id=(?P<id>\S+) \((?P<outcome>\w+)\): "
    r"before active=[\d.]+MB cache=(?P<before>[\d.]+)MB peak=[\d.]+MB rss=[\d.]+MB \| "
    r"after clear_cache active=[\d.]+MB cache=(?P<after>[\d.]+)MB peak=[\d.]+MB rss=[\d.]+MB")


def hygiene_line(w, gid):
    def find():
        return [m for m in MEM_LINE.finditer(w.stderr) if m["id"] == gid]
    assert wait_for(lambda: find()), f"no memory line for {gid}:\n{w.stderr[-2000:]}"
    return find()[-1]


def test_cache_cleared_after_success(spawn, tiny_model):
    w = spawn()
    w.load(str(tiny_model))
    gid = w.send("generate", messages=HI, max_tokens=64, temperature=0)
    assert w.until(lambda m: m.get("id") == gid and m["type"] == "done")[-1]["type"] == "done"
    line = hygiene_line(w, gid)
    assert line["outcome"] == "done"
    assert float(line["before"]) > 0  # the generation left buffers in MLX's cache...
    assert float(line["after"]) == 0  # ...and clear_cache released them
    assert w.request("stats")["memory"]["cache_gb"] == 0


def test_cache_cleared_after_cancel(spawn, tiny_model):
    w = spawn()
    w.load(str(tiny_model))
    gid = w.send("generate", messages=HI, max_tokens=10**9, temperature=0)
    w.until(lambda m: m.get("id") == gid and m["type"] == "delta")
    w.send("cancel", target=gid)
    done = w.until(lambda m: m.get("id") == gid and m["type"] == "done")[-1]
    assert done["finish_reason"] == "cancelled"
    assert float(hygiene_line(w, gid)["after"]) == 0
    assert w.request("stats")["memory"]["cache_gb"] == 0


def test_cache_cleared_after_error_and_stdout_stays_protocol_only(spawn, tiny_model):
    # noise: print(), a raw write to fd 1 and C printf on every command and token.
    w = spawn(env={"PENSIEVE_WORKER_FAULT": "noise,generate_error"})
    w.load(str(tiny_model))
    msgs = w.generate(messages=HI, max_tokens=32, temperature=0)
    assert [m["type"] for m in msgs][0] == "started"
    err = msgs[-1]
    assert err["type"] == "error" and err["code"] == "internal"
    assert "done" not in [m["type"] for m in msgs]
    line = hygiene_line(w, err["id"])
    assert line["outcome"] == "error" and float(line["after"]) == 0
    assert w.request("stats")["memory"]["cache_gb"] == 0
    assert w.request("shutdown")["type"] == "bye"
    assert w.wait_exit() == 0
    assert wait_for(lambda: "noise from C printf" in w.stderr)
    for text in ("noise from print", "noise from fd 1", "noise from C printf"):
        assert text in w.stderr
    assert w.raw_stdout and not w.bad_lines
    for raw in w.raw_stdout:
        assert json.loads(raw)["v"] == 1


def test_logs_never_carry_prompt_or_generated_text(spawn, tiny_model):
    w = spawn()
    w.load(str(tiny_model))
    secret = "zebra-secret-prompt-4242"
    msgs = w.generate(messages=[{"role": "user", "content": secret}], max_tokens=40,
                      temperature=1.0, seed=5)
    produced = "".join(m["text"] for m in msgs if m["type"] == "delta")
    w.request("shutdown")
    w.wait_exit()
    assert secret not in w.stderr
    for chunk in (produced[i:i + 12] for i in range(0, len(produced) - 12, 12)):
        assert chunk not in w.stderr
