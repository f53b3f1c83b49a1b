"""The worker protocol on the tiny model, through a real worker process."""

import json
from pathlib import Path

HI = [{"role": "user", "content": "hi"}]
FIXTURE = Path(__file__).resolve().parents[2] / "test" / "fixtures" / "claude-code-first-turn.json"
TOOLS = [{"type": "function", "function": {
    "name": "Bash", "description": "Run a command",
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}},
                   "required": ["command"]}}}]


def types(msgs):
    return [m["type"] for m in msgs]


def text_of(msgs):
    return "".join(m["text"] for m in msgs if m["type"] == "delta")


def test_loaded_reports_model_facts(worker, tiny_model):
    cfg = json.loads((tiny_model / "config.json").read_text())
    info = worker.load(str(tiny_model), cache_limit_gb=2)
    assert info["type"] == "loaded"
    assert info["context_length"] == cfg["max_position_embeddings"]
    assert info["vocab_size"] == cfg["vocab_size"]
    assert info["kv_bytes_per_token"] == (2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"]
                                          * cfg["head_dim"] * 4)  # float32 weights
    assert info["supports_vision"] is False
    assert info["demo"] is True
    assert info["has_tool_calling"] is True and info["tool_parser"] == "json_tools"
    assert info["cache_limit_gb"] == 2
    assert info["memory"]["cache_gb"] == 0


def test_generate_event_order_and_usage(worker):
    msgs = worker.generate(messages=HI, max_tokens=12, temperature=0.7, seed=3)
    kinds = types(msgs)
    assert kinds[0] == "started"
    body = kinds[1:-1]
    n_progress = body.count("progress")
    assert n_progress >= 1 and body[:n_progress] == ["progress"] * n_progress
    assert set(body[n_progress:]) <= {"delta"}
    done = msgs[-1]
    assert done["type"] == "done" and done["finish_reason"] in ("stop", "length")
    assert done["prompt_tokens"] == msgs[0]["prompt_tokens"] > 0
    assert 1 <= done["completion_tokens"] <= 12
    assert done["cached_tokens"] == 0 and done["stop_sequence"] is None
    progress = [m for m in msgs if m["type"] == "progress"]
    assert progress[-1]["processed"] == progress[-1]["total"] == done["prompt_tokens"]


def test_max_tokens_ends_with_length(worker):
    # Greedy decoding of this model from "hi" never picks end-of-turn.
    done = worker.generate(messages=HI, max_tokens=20, temperature=0)[-1]
    assert done["finish_reason"] == "length"
    assert done["completion_tokens"] == 20


def test_stop_sequence_cuts_the_text_before_the_match(worker):
    args = dict(messages=HI, max_tokens=40, temperature=1.0, seed=11)
    full = text_of(worker.generate(**args))
    assert len(full) >= 12, "seeded sample too short to pick a stop from"
    stop = full[8:11]
    msgs = worker.generate(stop=["never-in-random-text-\u2603", stop], **args)
    done = msgs[-1]
    assert done["finish_reason"] == "stop_sequence"
    assert done["stop_sequence"] == stop
    assert text_of(msgs) == full[: full.index(stop)]


def test_count_tokens_matches_generate_prompt_tokens(worker):
    messages = [{"role": "system", "content": "You are terse."},
                {"role": "user", "content": "list files"},
                {"role": "assistant", "content": "",
                 "tool_calls": [{"id": "c1", "type": "function",
                                 "function": {"name": "Bash", "arguments": {"command": "ls"}}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "a.txt"},
                {"role": "user", "content": "thanks"}]
    count = worker.request("count_tokens", messages=messages, tools=TOOLS)
    assert count["type"] == "count"
    started = worker.generate(messages=messages, tools=TOOLS, max_tokens=1)[0]
    assert started["type"] == "started"
    assert count["input_tokens"] == started["prompt_tokens"]
    plain = worker.request("count_tokens", messages=messages)["input_tokens"]
    assert plain < count["input_tokens"]  # tools are rendered into the prompt


def test_claude_code_fixture_fits_the_context(worker, tiny_model):
    body = json.loads(FIXTURE.read_text())["body"]
    system = "\n".join(b["text"] for b in body["system"])
    messages = [{"role": "system", "content": system}]
    for m in body["messages"]:
        content = m["content"] if isinstance(m["content"], str) else "\n".join(
            b.get("text", "") for b in m["content"])
        messages.append({"role": m["role"], "content": content})
    tools = [{"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                               "parameters": t.get("input_schema", {})}}
             for t in body["tools"]]
    count = worker.request("count_tokens", messages=messages, tools=tools)["input_tokens"]
    context = json.loads((tiny_model / "config.json").read_text())["max_position_embeddings"]
    assert 0 < count < context
    msgs = worker.generate(messages=messages, tools=tools, max_tokens=8, temperature=0)
    assert msgs[0]["prompt_tokens"] == count
    assert msgs[-1]["type"] == "done"


def test_cancel_mid_generation(worker):
    gid = worker.send("generate", messages=HI, max_tokens=10**9, temperature=0)
    first = worker.until(lambda m: m.get("id") == gid and m["type"] == "delta")
    assert first[0]["type"] == "started"
    cid = worker.send("cancel", target=gid)
    rest = worker.until(lambda m: m.get("id") == gid and m["type"] == "done")
    reply = next(m for m in rest if m.get("id") == cid)
    assert reply == {"v": 1, "type": "cancelled", "id": cid, "target": gid, "found": True}
    done = rest[-1]
    assert done["finish_reason"] == "cancelled"
    assert done["completion_tokens"] >= 1
    assert worker.request("cancel", target=gid)["found"] is False


def test_stats_and_count_tokens_are_answered_during_generation(worker):
    gid = worker.send("generate", messages=HI, max_tokens=10**9, temperature=0)
    worker.until(lambda m: m.get("id") == gid and m["type"] == "delta")
    stats = worker.request("stats")
    assert stats["type"] == "stats" and stats["generating"] == gid
    assert set(stats["memory"]) == {"active_gb", "cache_gb", "peak_gb", "rss_gb"}
    assert worker.request("count_tokens", messages=HI)["type"] == "count"
    worker.send("cancel", target=gid)
    assert worker.until(lambda m: m.get("id") == gid and m["type"] == "done")[-1][
        "finish_reason"] == "cancelled"


def test_other_commands_wait_and_queued_generate_can_be_cancelled(spawn, tiny_model):
    # One at a time (max_batch 1): a second generate waits like any other command.
    worker = spawn()
    loaded = worker.load(str(tiny_model), max_batch=1)
    assert loaded["max_concurrency"] == 1
    a = worker.send("generate", messages=HI, max_tokens=10**9, temperature=0)
    worker.until(lambda m: m.get("id") == a and m["type"] == "delta")
    b = worker.send("generate", messages=HI, max_tokens=5, temperature=0)
    c = worker.send("clear_cache")
    stats = worker.request("stats")
    assert stats["generating"] == a and stats["deferred"] == 2
    cancel_b = worker.request("cancel", target=b)
    assert cancel_b["found"] is True
    done_b = worker.recv()
    assert done_b["id"] == b and done_b["finish_reason"] == "cancelled"
    worker.send("cancel", target=a)
    rest = worker.until(lambda m: m.get("id") == c)
    assert [m["type"] for m in rest if m.get("id") == a][-1] == "done"
    assert rest[-1]["type"] == "cleared"


def test_bad_lines_get_errors_and_the_worker_keeps_going(worker):
    worker.send_raw("this is not json")
    err = worker.recv()
    assert err["type"] == "error" and err["id"] is None and err["code"] == "bad_request"
    worker.send_raw("[1, 2]")
    assert worker.recv()["code"] == "bad_request"
    worker.send_raw(json.dumps({"v": 1, "cmd": "stats"}))  # no id
    assert worker.recv()["code"] == "bad_request"
    unknown = worker.request("frobnicate")
    assert unknown["type"] == "error" and unknown["code"] == "bad_request"
    assert "frobnicate" in unknown["message"]
    wrong_v = worker.request("stats", v=2)
    assert wrong_v["code"] == "bad_request"
    bad_args = worker.request("generate", messages=HI, max_tokens=0)
    assert bad_args["type"] == "error" and bad_args["code"] == "bad_request"
    no_msgs = worker.request("count_tokens", messages=[])
    assert no_msgs["code"] == "bad_request"
    assert worker.request("stats")["type"] == "stats"
