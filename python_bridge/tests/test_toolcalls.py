"""Tool-call and thinking splitting on recorded outputs of each format, whole and in pieces."""

import random
import re

import pytest

from pensieve_bridge.output import TextOutput
from pensieve_bridge.splitter import OutputSplitter
from pensieve_bridge.toolcalls import is_llama3_template, mlx_format

THINK = ("<think>", "</think>")
TOOLS = [{"type": "function", "function": {
    "name": "Bash", "description": "Run a command",
    "parameters": {"type": "object", "properties": {
        "command": {"type": "string"}, "timeout": {"type": "integer"}}}}},
         {"type": "function", "function": {
    "name": "Read", "parameters": {"type": "object", "properties": {
        "file_path": {"type": "string"}}, "required": ["file_path"]}}}]

HERMES = ('Let me look.\n<tool_call>\n{"name": "Bash", "arguments": {"command": "ls -la"}}\n'
          '</tool_call>\n<tool_call>\n{"name": "Read", "arguments": {"file_path": "/tmp/a b.txt"}}'
          '\n</tool_call>')
QWEN3_CODER = ('I will run it.\n<tool_call>\n<function=Bash>\n<parameter=command>\necho "hi there"\n'
               '</parameter>\n<parameter=timeout>\n30\n</parameter>\n</function>\n</tool_call>')
LLAMA3 = '{"name": "Bash", "parameters": {"command": "ls", "timeout": 5}}'
LLAMA3_TAGGED = '<|python_tag|>{"name": "Bash", "parameters": {"command": "pwd"}}; {"name": "Read", "parameters": {"file_path": "x"}}'
MISTRAL = '[TOOL_CALLS]Bash[ARGS]{"command": "ls -la"}[TOOL_CALLS]Read[ARGS]{"file_path": "/a"}'
MISTRAL_JSON = '[TOOL_CALLS][{"name": "Bash", "arguments": {"command": "ls"}}]'


def chunked(text, how):
    if how == "whole":
        return [text]
    if how == "chars":
        return list(text)
    rng = random.Random(7)
    out, i = [], 0
    while i < len(text):
        n = rng.randint(1, 6)
        out.append(text[i:i + n])
        i += n
    return out


def run(text, fmt_name=None, how="whole", think=None, in_think=False, forced=None, tools=TOOLS):
    fmt = mlx_format(fmt_name) if fmt_name else None
    sp = OutputSplitter(fmt, tools, think, in_think, forced)
    segs = []
    for piece in chunked(text, how):
        segs += sp.feed(piece)
    segs += sp.finish()
    return merge(segs), sp


def merge(segs):
    """Adjacent text/thinking pieces joined, so chunking cannot change the result."""
    out = []
    for kind, val in segs:
        if out and kind != "call" and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + val)
        else:
            out.append((kind, val))
    return out


HOW = ["whole", "chars", "random"]


@pytest.mark.parametrize("how", HOW)
def test_hermes_two_calls_after_text(how):
    segs, sp = run(HERMES, "json_tools", how)
    assert segs == [("text", "Let me look.\n"),
                    ("call", {"name": "Bash", "arguments": {"command": "ls -la"}}),
                    ("call", {"name": "Read", "arguments": {"file_path": "/tmp/a b.txt"}})]
    assert sp.call_count == 2


@pytest.mark.parametrize("how", HOW)
def test_qwen3_coder_parameters_typed_by_schema(how):
    segs, _ = run(QWEN3_CODER, "qwen3_coder", how)
    assert segs == [("text", "I will run it.\n"),
                    ("call", {"name": "Bash",
                              "arguments": {"command": 'echo "hi there"', "timeout": 30}})]


@pytest.mark.parametrize("how", HOW)
def test_llama3_json_whole_answer(how):
    segs, _ = run(LLAMA3, "llama3_json", how)
    assert segs == [("call", {"name": "Bash", "arguments": {"command": "ls", "timeout": 5}})]
    segs, _ = run(LLAMA3_TAGGED, "llama3_json", how)
    assert [s[1]["name"] for s in segs] == ["Bash", "Read"]


@pytest.mark.parametrize("how", HOW)
def test_llama3_plain_text_and_bad_json_stay_text(how):
    assert run("Hello {there}", "llama3_json", how)[0] == [("text", "Hello {there}")]
    assert run('  {"oops": 1', "llama3_json", how)[0] == [("text", '  {"oops": 1')]


@pytest.mark.parametrize("how", HOW)
def test_mistral_calls_run_to_the_end_of_the_turn(how):
    segs, _ = run(MISTRAL, "mistral", how)
    assert segs == [("call", {"name": "Bash", "arguments": {"command": "ls -la"}}),
                    ("call", {"name": "Read", "arguments": {"file_path": "/a"}})]
    segs, _ = run(MISTRAL_JSON, "mistral", how)
    assert segs == [("call", {"name": "Bash", "arguments": {"command": "ls"}})]


@pytest.mark.parametrize("how", HOW)
def test_invalid_call_goes_back_as_text(how):
    bad = 'ok <tool_call>\n{"name": "Bash", "arguments": {oops}}\n</tool_call> after'
    assert run(bad, "json_tools", how)[0] == [("text", bad)]
    cut = 'ok <tool_call>\n{"name": "Bash", "argu'  # max_tokens cut the call
    assert run(cut, "json_tools", how)[0] == [("text", cut)]
    no_name = '<tool_call>{"arguments": {}}</tool_call>'
    assert run(no_name, "json_tools", how)[0] == [("text", no_name)]


def test_no_tools_means_markers_are_text():
    assert run(HERMES, None, tools=None)[0] == [("text", HERMES)]


@pytest.mark.parametrize("how", HOW)
def test_no_format_with_tools_still_finds_tagged_json(how):
    # A model without a tool parser: <tool_call>{json} on its own line is still a call.
    segs, _ = run(HERMES, None, how)
    assert segs == [("text", "Let me look.\n"),
                    ("call", {"name": "Bash", "arguments": {"command": "ls -la"}}),
                    ("call", {"name": "Read", "arguments": {"file_path": "/tmp/a b.txt"}})]


@pytest.mark.parametrize("how", HOW)
def test_thinking_then_answer_then_call(how):
    text = "<think>\nI should list.\n</think>\n\nSure." + HERMES[len("Let me look."):]
    segs, _ = run(text, "json_tools", how, think=THINK)
    assert segs[0] == ("thinking", "\nI should list.\n")
    assert segs[1] == ("text", "Sure.\n")
    assert [s[0] for s in segs[2:]] == ["call", "call"]  # text after a call is dropped


@pytest.mark.parametrize("how", HOW)
def test_prompt_opened_think(how):
    segs, _ = run("plan <tool_call> inside\n</think>\n\nDone", "json_tools", how,
                  think=THINK, in_think=True)
    assert segs == [("thinking", "plan <tool_call> inside\n"), ("text", "Done")]


@pytest.mark.parametrize("how", HOW)
def test_forced_named_call_continues_inside_the_call(how):
    fmt = mlx_format("json_tools")
    forced = fmt.forced_prefix("Bash")
    assert forced == '<tool_call>\n{"name": "Bash", "arguments": '
    segs, _ = run('{"command": "ls"}}\n</tool_call>', "json_tools", how, forced=forced)
    assert segs == [("call", {"name": "Bash", "arguments": {"command": "ls"}})]
    llama = mlx_format("llama3_json").forced_prefix("Bash")
    segs, _ = run('{"command": "ls"}}', "llama3_json", how, forced=llama)
    assert segs == [("call", {"name": "Bash", "arguments": {"command": "ls"}})]


def test_text_output_events_ids_thinking_and_parallel_stop():
    fmt = mlx_format("json_tools")
    text = "<think>hm</think>Hi " + HERMES
    shown = TextOutput("g", [], OutputSplitter(fmt, TOOLS, THINK), show_thinking=True)
    events = [e for piece in chunked(text, "chars") for e in shown.feed(piece)] + shown.finish()
    kinds = [e["type"] for e in events]
    assert kinds[0] == "thinking" and kinds.count("tool_call") == 2
    call = next(e for e in events if e["type"] == "tool_call")
    assert "call_id" not in call  # the server mints tool_use ids
    assert call["name"] == "Bash" and call["arguments"] == {"command": "ls -la"}

    hidden = TextOutput("g", [], OutputSplitter(fmt, TOOLS, THINK), show_thinking=False,
                        parallel_tool_calls=False)
    events = []
    for piece in chunked(text, "chars"):
        events += hidden.feed(piece)
        if hidden.stop_now:
            break
    assert "thinking" not in [e["type"] for e in events]
    assert "hm" not in "".join(e.get("text", "") for e in events)
    assert [e["type"] for e in events].count("tool_call") == 1 and hidden.stop_now


def test_stop_sequences_apply_to_answer_text_only():
    out = TextOutput("g", ["STOP"], OutputSplitter(None, None, THINK), show_thinking=True)
    events = out.feed("<think>no STOP here</think>answer STOP rest") + out.finish()
    assert [e["type"] for e in events] == ["thinking", "delta"]
    assert events[1]["text"] == "answer " and out.matched == "STOP"


def test_llama3_detection():
    tpl = '<|start_header_id|>user{{ tools }} {"name": function name, "parameters": dict}'
    assert is_llama3_template(tpl) and not is_llama3_template("<|im_start|>{{ tools }}")
