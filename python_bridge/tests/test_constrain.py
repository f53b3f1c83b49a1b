"""Forced tool calls under constrained decoding (constrain.py): they cannot fail.

Unit: the grammar accepts exactly the valid calls, token by token, on the tiny model's
tokenizer and on the real Qwen2.5 tokenizer (151k tokens). Through the worker: the
tiny model's weights are random, yet tool_choice required/named at temperature 1 gives
a valid call every time. Real model: Qwen2.5-Coder-0.5B forced to call get_weather
(skipped only with PENSIEVE_REAL_MODELS=0).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import WorkerProc, load_fields
from pensieve_bridge.constrain import (Constraint, call_form, constraint_for, forced_tool,
                                       unforced)
from pensieve_bridge.jsonschema_lite import conform
from pensieve_bridge.splitter import OutputSplitter
from pensieve_bridge.toolcalls import format_for, mlx_format, tool_schemas

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / ".pensieve" / "test-models"
OPENBLAS = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3")
REAL = os.environ.get("PENSIEVE_REAL_MODELS") != "0"
SLOW = 600.0

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
ADD = {"type": "function", "function": {
    "name": "add", "parameters": {"type": "object", "required": ["a", "b"], "properties": {
        "a": {"type": "integer"}, "b": {"type": "integer"},
        "mode": {"type": "string", "enum": ["fast", "exact"]}}}}}
TOOLS = [WEATHER, ADD]
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def params(choice, tools=TOOLS):
    return SimpleNamespace(tools=tools, tool_choice=choice)


def fake_lm(path: Path, fmt="native"):
    """What constraint_for reads of a LoadedModel, without loading the weights."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer
    import json

    tok = load_tokenizer(path)
    return SimpleNamespace(tokenizer=tok, tool_format=format_for(tok) if fmt == "native" else fmt,
                           think=None, config=json.loads((path / "config.json").read_text()))


def accepts(c: Constraint, lm, text: str) -> bool:
    """The grammar lets the model write exactly `text` and then end the turn."""
    for t in lm.tokenizer.encode(text, add_special_tokens=False):
        if not c.allowed()[t] or not c.advance(t):
            return False
    mask = c.allowed()
    return c.done and all(mask[e] for e in c.eos) and mask.sum() == len(c.eos)


@pytest.fixture(scope="module")
def tiny_lm(tiny_model):
    return fake_lm(tiny_model)


def qwen_dir() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from pensieve_bridge.gguf import fetch
    from pensieve_bridge.gguf.convert import convert

    return convert(fetch.fetch_model("0.5b", MODELS_DIR), MODELS_DIR / "mlx", "float32")


@pytest.fixture(scope="module")
def qwen_lm():
    if not REAL:
        pytest.skip("PENSIEVE_REAL_MODELS=0")
    return fake_lm(qwen_dir())


# -- which requests are constrained ---------------------------------------------------

def test_only_forced_choices_are_constrained(tiny_lm):
    assert forced_tool(params("auto")) is None and forced_tool(params("none")) is None
    assert forced_tool(params("required")) == "" and forced_tool(params({"name": "add"})) == "add"
    assert constraint_for(tiny_lm, params("auto")) is None
    assert constraint_for(tiny_lm, params({"name": "nope"})) is None  # unknown tool: as before
    assert constraint_for(tiny_lm, params("required", tools=None)) is None
    assert isinstance(constraint_for(tiny_lm, params("required")), Constraint)


def test_the_kill_switch_turns_it_off(tiny_lm, monkeypatch):
    monkeypatch.setenv("PENSIEVE_CONSTRAIN", "0")
    assert constraint_for(tiny_lm, params("required")) is None


def test_plan_output_gets_an_unforced_copy():
    from pensieve_bridge.params import parse_params

    p = parse_params({"messages": ASK, "tools": TOOLS, "tool_choice": "required"})
    assert unforced(p).tool_choice == "auto" and p.tool_choice == "required"


# -- the grammar, token by token -------------------------------------------------------

VALID = [
    ({"name": "get_weather"}, "<tool_call>\n" + CALL + "\n</tool_call>"),
    ("required", "<tool_call>\n" + CALL + "\n</tool_call>"),
    ("required", '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": -3, "mode": "fast"}}\n</tool_call>'),
]
INVALID = [
    ({"name": "add"}, "<tool_call>\n" + CALL + "\n</tool_call>"),  # not the named tool
    ("required", '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'),  # no such tool
    ("required", '<tool_call>\n{"name": "add", "arguments": {"a": 2}}\n</tool_call>'),  # missing b
    ("required", '<tool_call>\n{"name": "add", "arguments": {"a": "2", "b": 1}}\n</tool_call>'),  # a string
    ("required", '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 1, "mode": "slow"}}\n</tool_call>'),
    ("required", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "x": 1}}\n</tool_call>'),
    ("required", "<tool_call>\n" + CALL + "\n</tool_call>\nDone!"),  # stray text after the call
    ("required", "<tool_call>\n" + CALL[:-1] + "\n</tool_call>"),  # its last brace missing
    ("required", "<tool_call>\n" + CALL),  # no end marker
    ("required", "Sure! <tool_call>\n" + CALL + "\n</tool_call>"),  # text before the call
]


@pytest.mark.parametrize("lm_name", ["tiny_lm", "qwen_lm"])
def test_the_grammar_accepts_exactly_valid_calls(lm_name, request):
    lm = request.getfixturevalue(lm_name)
    for choice, text in VALID:
        assert accepts(constraint_for(lm, params(choice)), lm, text), (choice, text)
    for choice, text in INVALID:
        assert not accepts(constraint_for(lm, params(choice)), lm, text), (choice, text)


def test_a_schema_llguidance_cannot_compile_still_gets_name_and_object(tiny_lm):
    odd = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string", "pattern": "(?<=x)a"}}}}}]
    c = constraint_for(tiny_lm, params("required", odd))  # look-behind: not supported
    assert accepts(c, tiny_lm, '<tool_call>\n{"name": "f", "arguments": {"a": "xa"}}\n</tool_call>')


def test_the_call_start_is_the_families_own_marker_token(qwen_lm):
    c = constraint_for(qwen_lm, params("required"))
    allowed = c.allowed().nonzero()[0].tolist()
    assert [qwen_lm.tokenizer.decode([t]) for t in allowed] == ["<tool_call>"]


def test_a_prompt_inside_reasoning_closes_it_first(tiny_lm, monkeypatch):
    import pensieve_bridge.constrain as constrain

    monkeypatch.setattr(constrain, "_in_think", lambda lm, ids: True)
    lm = SimpleNamespace(**{**vars(tiny_lm), "think": ("<think>", "</think>")})
    c = constraint_for(lm, params("required"), ids=[1])
    assert accepts(c, lm, "</think>\n\n<tool_call>\n" + CALL + "\n</tool_call>")


# -- auto with strict tools: free text, calls constrained once started -------------------

def strict(tools):
    import copy

    out = copy.deepcopy(tools)
    out[0]["function"]["strict"] = True
    return out


def test_auto_is_constrained_only_with_strict_tools(tiny_lm):
    assert constraint_for(tiny_lm, params("auto")) is None
    assert constraint_for(tiny_lm, params("auto", strict(TOOLS))) is not None
    no_marker = SimpleNamespace(**{**vars(tiny_lm), "tool_format": None})
    assert constraint_for(no_marker, params("auto", strict(TOOLS))) is None  # nothing triggers


def free_then(c, lm, text):
    # Like accepts(), but text may go on: the turn may end (EOS) or continue.
    for t in lm.tokenizer.encode(text, add_special_tokens=False):
        if not c.allowed()[t] or not c.advance(t):
            return False
    return bool(c.allowed()[c.eos[0]])


@pytest.mark.parametrize("lm_name", ["tiny_lm", "qwen_lm"])
def test_strict_tools_constrain_a_started_call(lm_name, request):
    lm = request.getfixturevalue(lm_name)
    p = params("auto", strict(TOOLS))
    assert free_then(constraint_for(lm, p), lm, "Plain text, no call at all.")
    assert free_then(constraint_for(lm, p), lm, "Checking.\n<tool_call>\n" + CALL + "\n</tool_call>")
    bad = '<tool_call>\n{"name": "get_weather", "arguments": {"town": "Paris"}}\n</tool_call>'
    assert not free_then(constraint_for(lm, p), lm, bad)
    assert not free_then(constraint_for(lm, p), lm, "<tool_call>\n" + CALL)  # no EOS mid-call


# -- forms the splitter reads back -------------------------------------------------------

def split(fmt, text):
    s = OutputSplitter(fmt, TOOLS)
    return s.feed(text) + s.finish()


@pytest.mark.parametrize("fmt_name,text", [
    ("json_tools", "<tool_call>\n" + CALL + "\n</tool_call>"),
    ("qwen3_coder", "<tool_call>\n" + CALL + "\n</tool_call>"),  # JSON between its markers
    ("mistral", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'),
    ("llama3_json", '{"name": "get_weather", "parameters": {"city": "Paris"}}'),
    (None, CALL),  # no parser: a bare JSON object
])
def test_each_form_the_grammar_writes_is_parsed_back(fmt_name, text):
    fmt = mlx_format(fmt_name) if fmt_name else None
    form = call_form(fmt)
    before, after = form.alternative("get_weather", {})
    assert text == form.start + before + '{"city": "Paris"}' + after + form.end
    assert split(fmt, text) == [("call", {"name": "get_weather", "arguments": {"city": "Paris"}})]


def test_a_model_without_a_parser_is_forced_too(tiny_lm):
    lm = SimpleNamespace(**{**vars(tiny_lm), "tool_format": None})
    assert accepts(constraint_for(lm, params({"name": "get_weather"})), lm, CALL)
    assert not accepts(constraint_for(lm, params({"name": "get_weather"})), lm,
                       "<tool_call>\n" + CALL + "\n</tool_call>")


# -- through the worker: random weights, valid calls ------------------------------------------

def check_one_call(msgs, names):
    calls = [m for m in msgs if m["type"] == "tool_call"]
    assert len(calls) == 1, msgs
    assert calls[0]["name"] in names
    schema = tool_schemas(TOOLS)[calls[0]["name"]]
    assert conform(calls[0]["arguments"], schema) == calls[0]["arguments"]
    assert not [m for m in msgs if m["type"] == "delta"], msgs  # nothing injected comes back
    assert msgs[-1]["type"] == "done" and msgs[-1]["finish_reason"] == "tool_calls", msgs[-1]


@pytest.mark.parametrize("choice,names", [("required", {"get_weather", "add"}),
                                          ({"name": "add"}, {"add"})])
def test_forced_calls_of_a_random_model_are_always_valid(worker, choice, names):
    for seed in range(20):
        msgs = worker.generate(messages=ASK, tools=TOOLS, tool_choice=choice, max_tokens=2000,
                               temperature=1.0, seed=seed)
        check_one_call(msgs, names)


def test_forced_calls_in_a_batch_are_valid(batch_worker):
    # The first starts solo; those sent just after join a batch, which adopts it mid-call
    # (path=solo+batch in the log): its grammar state goes on from where the solo left it.
    def send():
        return batch_worker.send("generate", messages=ASK, tools=TOOLS, tool_choice="required",
                                 max_tokens=2000, temperature=1.0)
    ids = [send()]
    time.sleep(0.03)
    ids += [send() for _ in range(3)]
    ended, by_id = set(), {i: [] for i in ids}
    while len(ended) < len(ids):
        m = batch_worker.recv()
        if m.get("id") in by_id:
            by_id[m["id"]].append(m)
            if m["type"] in ("done", "error"):
                ended.add(m["id"])
    for msgs in by_id.values():
        check_one_call(msgs, {"get_weather", "add"})


# -- the real model ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def qwen_worker():
    if not REAL:
        pytest.skip("PENSIEVE_REAL_MODELS=0")
    model = qwen_dir()
    env = {"LD_PRELOAD": str(OPENBLAS)} if OPENBLAS.exists() else {}
    w = WorkerProc(env=env)
    assert w.recv()["type"] == "hello"
    gid = w.send("load", **load_fields(model, warmup=False))
    assert w.until(lambda m: m.get("id") == gid, timeout=SLOW)[-1]["type"] == "loaded"
    yield w
    w.stop()
    assert not w.bad_lines


@pytest.mark.parametrize("choice", [{"name": "get_weather"}, "required"])
def test_the_real_model_forced_at_temperature_1_calls_validly(qwen_worker, choice):
    for seed in range(3):
        gid = qwen_worker.send("generate", messages=ASK, tools=[WEATHER], tool_choice=choice,
                               max_tokens=40, temperature=1.0, seed=seed)
        msgs = qwen_worker.until(lambda m: m.get("id") == gid and m["type"] in ("done", "error"),
                                 timeout=SLOW)
        calls = [m for m in msgs if m["type"] == "tool_call"]
        assert [c["name"] for c in calls] == ["get_weather"], msgs
        assert isinstance(calls[0]["arguments"]["city"], str), calls
        assert not [m for m in msgs if m["type"] == "delta"], msgs
        assert msgs[-1]["finish_reason"] == "tool_calls"


