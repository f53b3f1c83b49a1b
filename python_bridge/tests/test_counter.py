"""The token counter (`mlx_inference.py --counter`): tokenizer only, same counts as the model worker."""

import psutil

HI = [{"role": "user", "content": "hi"}]
TOOLS = [{"type": "function", "function": {
    "name": "Bash", "description": "Run a command",
    "parameters": {"type": "object", "properties": {"command": {"type": "string"}},
                   "required": ["command"]}}}]
PROMPTS = [
    dict(messages=HI),
    dict(messages=[{"role": "system", "content": "You are terse."},
                   {"role": "user", "content": "list files"},
                   {"role": "assistant", "content": "",
                    "tool_calls": [{"id": "c1", "type": "function",
                                    "function": {"name": "Bash", "arguments": {"command": "ls"}}}]},
                   {"role": "tool", "tool_call_id": "c1", "content": "a.txt"},
                   {"role": "user", "content": "thanks \u2603"}], tools=TOOLS),
    dict(messages=[{"role": "user", "content": "go on"},
                   {"role": "assistant", "content": "Once upon a time"}]),  # a prefill
    dict(messages=HI, enable_thinking=True),
]


def test_counter_counts_exactly_what_the_worker_renders(spawn, worker, tiny_model):
    c = spawn(args=["--counter"])
    assert c.raw_stdout[0].startswith(b'{"v":1,"type":"hello"')
    assert c.request("count_tokens", messages=HI)["code"] == "not_loaded"
    loaded = c.request("load", model=str(tiny_model))
    assert loaded["type"] == "loaded" and loaded["counter"] is True
    for prompt in PROMPTS:
        counted = c.request("count_tokens", **prompt)
        assert counted["type"] == "count", counted
        assert counted["input_tokens"] == worker.request("count_tokens", **prompt)["input_tokens"]
        started = worker.generate(max_tokens=1, **prompt)[0]
        assert counted["input_tokens"] == started["prompt_tokens"]
    assert not c.bad_lines


def test_counter_loads_no_weights_and_serves_only_counts(spawn, tiny_model):
    c = spawn(args=["--counter"])
    assert c.request("load", model=str(tiny_model))["type"] == "loaded"
    refused = c.request("generate", messages=HI)
    assert refused["type"] == "error" and refused["code"] == "bad_request"
    assert c.request("count_tokens", messages=[])["code"] == "bad_request"
    stats = c.request("stats")
    assert stats["model"] == str(tiny_model) and stats["memory"]["rss_gb"] > 0
    # No MLX model in memory: the counter stays a small process.
    assert psutil.Process(c.proc.pid).memory_info().rss < 400e6
    assert c.request("shutdown")["type"] == "bye"
    assert c.wait_exit() == 0


def test_counter_exits_on_stdin_eof(spawn, tiny_model):
    c = spawn(args=["--counter"])
    c.proc.stdin.close()
    assert c.wait_exit() == 0
    assert "[counter] stdin closed" in c.stderr


def test_counter_load_failure_is_reported(spawn, tmp_path):
    c = spawn(args=["--counter"])
    failed = c.request("load", model=str(tmp_path / "no-such-model"))
    assert failed["type"] == "error" and failed["code"] == "load_failed"
