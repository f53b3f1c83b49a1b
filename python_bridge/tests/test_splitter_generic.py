"""Tool calls in the forms real models write: bare JSON, ```json fences, lists, repairs.

The outputs are those Qwen2.5-Coder-0.5B wrote for get_weather (see
test_real_toolcalls.py), plus the variants llama.cpp's and Ollama's parsers accept.
Every case runs whole, one character at a time and split at every position.
"""

import pytest

from pensieve_bridge.output import TextOutput
from pensieve_bridge.jsonschema_lite import Invalid, conform
from pensieve_bridge.splitter import OutputSplitter
from pensieve_bridge.toolcalls import JsonScanner, json_head, mlx_format, parse_json_calls, tool_schemas

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}
BASH = {"type": "function", "function": {"name": "Bash", "parameters": {
    "type": "object", "properties": {"command": {"type": "string"},
                                     "timeout": {"type": "number"}}, "required": ["command"]}}}
TOOLS = [WEATHER, BASH]
PARIS = {"name": "get_weather", "arguments": {"city": "Paris"}}
CALL = ("call", PARIS)

# Recorded from the 0.5B at temperature 0 / 0.7 (the baseline run gave these as text).
FENCED = '```json\n{\n  "name": "get_weather",\n  "arguments": {\n    "city": "Paris"\n  }\n}\n```'
BARE = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
BARE_PRETTY = '{\n"name": "get_weather",\n"arguments": {\n  "city": "Paris"\n}\n}'


def pieces(text, how):
    if how == "whole":
        return [text]
    if how == "chars":
        return list(text)
    return [text[:how], text[how:]]  # an int: split there


def run(text, fmt=None, how="whole", tools=TOOLS, think=None, forced=None):
    sp = OutputSplitter(mlx_format(fmt) if fmt else None, tools, think, False, forced)
    segs = []
    for p in pieces(text, how):
        segs += sp.feed(p)
    segs += sp.finish()
    return merge(segs)


def merge(segs):
    out = []
    for kind, val in segs:
        if out and kind != "call" and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + val)
        else:
            out.append((kind, val))
    return out


def every_split(text):
    return ["whole", "chars"] + list(range(1, len(text)))


def assert_everywhere(text, expected, **kw):
    for how in every_split(text):
        assert run(text, how=how, **kw) == expected, f"split {how!r}"


@pytest.mark.parametrize("text", [FENCED, BARE, BARE_PRETTY, "  " + BARE + "\n",
                                  "```\n" + BARE + "\n```", "<tool_call>\n" + BARE + "\n</tool_call>",
                                  "[" + BARE + "]", '{"type": "function", "function": ' + BARE + "}",
                                  '{"name": "get_weather", "parameters": {"city": "Paris"}}',
                                  '{"name": "get_weather", "input": {"city": "Paris"}}',
                                  '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}'])
@pytest.mark.parametrize("fmt", [None, "json_tools", "llama3_json"])
def test_generic_forms_are_calls_for_every_family(text, fmt):
    assert_everywhere(text, [CALL], fmt=fmt)


@pytest.mark.parametrize("fmt", [None, "json_tools", "mistral", "qwen3_coder"])
def test_prose_then_fenced_call(fmt):
    text = "I'll check the weather for you.\n" + FENCED + "\nThe weather is sunny."
    assert_everywhere(text, [("text", "I'll check the weather for you.\n"), CALL], fmt=fmt)


def test_two_calls_a_list_and_two_fences():
    two = [CALL, ("call", {"name": "Bash", "arguments": {"command": "ls"}})]
    text = '[' + BARE + ', {"name": "Bash", "arguments": {"command": "ls"}}]'
    assert_everywhere(text, two, fmt="json_tools")
    text = FENCED + '\n```json\n{"name": "Bash", "arguments": {"command": "ls"}}\n```\n'
    assert_everywhere(text, two, fmt="json_tools")


@pytest.mark.parametrize("text", [
    '{"name": "get_weather", "arguments": {"city": "Paris"}',  # the output ended first
    '{"name": "get_weather", "arguments": {"city": "Paris"}\n```',
    '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}\n```\nDone.',
    BARE + " I hope this helps!",  # trailing text after the complete object
    "{" + BARE + "}",  # doubled braces, as Qwen2.5-Coder-1.5B wrote it
    "<tool_call>\n" + BARE[:-1] + "\n</tool_call>",  # the family form missing a brace
])
def test_repairs(text):
    assert_everywhere(text, [CALL], fmt="json_tools")


@pytest.mark.parametrize("text", [
    '{"name": "get_wether", "arguments": {"city": "Paris"}}',  # not one of the tools
    '{"name": "get_weather", "arguments": {"town": "Paris"}}',  # additionalProperties false
    '{"name": "get_weather", "arguments": {}}',  # required city missing
    '{"name": "get_weather", "arguments": {"city": 7}}',  # wrong type
    '{"name": "get_weather", "arguments": {"city": "Paris"}, "x": [}',  # malformed
    '{"name": "get_weather", "arguments": {"city": "Par',  # cut inside a string: no guess
    '[' + BARE + ', {"name": "nope", "arguments": {}}]',  # one bad call spoils the list
    '{"city": "Paris"}', '[1, 2, 3]', "[link](http://x)", "{not json}", "{{ jinja }}",
    '{{"name": "get_weather", "arguments": {"city": "Paris"}}',  # doubled, then unbalanced
    "```python\nprint({'name': 1})\n```", "```\nplain\n```", "`code` and more",
    "<tool_call>\n" + '{"name": "nope", "arguments": {}}' + "\n</tool_call>",
])
def test_not_calls_stay_text_exactly(text):
    assert_everywhere(text, [("text", text)], fmt="json_tools")


def test_tool_choice_none_or_no_tools_means_text():
    for text in (FENCED, BARE):
        assert run(text, "json_tools", tools=None) == [("text", text)]


def test_json_answers_that_are_not_calls_stream_at_once():
    sp = OutputSplitter(mlx_format("json_tools"), TOOLS)
    assert sp.feed('{"city"') == [("text", '{"city"')]  # the first key says: no call
    sp = OutputSplitter(mlx_format("json_tools"), TOOLS)
    assert sp.feed("```python\n") == [("text", "```python\n")]
    sp = OutputSplitter(None, TOOLS)
    assert sp.feed('Sure.\n{"na') == [("text", "Sure.\n")]  # held: may be a call
    assert sp.feed('me": "x"}') == [("text", '{"name": "x"}')]  # complete, no such tool


def test_no_text_streams_before_the_call_is_known():
    # Each fragment at a time: nothing of the call's text ever leaves as text.
    sp = OutputSplitter(mlx_format("json_tools"), TOOLS)
    seen = []
    for ch in "Checking.\n" + FENCED:
        seen += sp.feed(ch)
    seen += sp.finish()
    text = "".join(v for k, v in seen if k == "text")
    assert text == "Checking.\n" and [s for s in seen if s[0] == "call"] == [CALL]


def test_thinking_then_bare_call():
    segs = run("<think>weather tool</think>\n\n" + BARE, "json_tools", think=("<think>", "</think>"))
    assert segs == [("thinking", "weather tool"), CALL]


def test_text_after_a_call_is_dropped_but_later_calls_count():
    text = BARE + "\n\nThe weather in Paris is sunny.\n<tool_call>\n" + \
        '{"name": "Bash", "arguments": {"command": "ls"}}</tool_call>\nbye'
    assert run(text, "json_tools") == [CALL, ("call", {"name": "Bash", "arguments": {"command": "ls"}})]


@pytest.mark.parametrize("fmt,tail", [("json_tools", '{"city": "Paris"}}\n</tool_call>'),
                                      ("llama3_json", '{"city": "Paris"}}')])
def test_forced_prefix_is_never_text(fmt, tail):
    f = mlx_format(fmt)
    forced = f.forced_prefix("get_weather")
    for how in every_split(tail):
        assert run(tail, fmt, how, forced=forced) == [CALL]
    # The model broke the forced call: only what it wrote comes back, never the prefix.
    bad = "oops, no JSON here"
    segs = run(bad, fmt, forced=forced)
    assert segs == [("text", bad)] and "<tool_call>" not in segs[0][1] and '"name"' not in segs[0][1]
    required = run(" sorry", "json_tools", forced=mlx_format("json_tools").forced_prefix(None))
    assert required == [("text", " sorry")]


def test_fenced_family_tag_hides_the_fence():
    text = "```xml\n<tool_call>\n" + BARE + "\n</tool_call>\n```"
    assert run(text, "json_tools") == [CALL]
    bad = "```xml\n<tool_call>\n{oops}\n</tool_call>\n```"
    assert run(bad, "json_tools") == [("text", bad)]


def test_text_output_streams_prose_then_one_call_event():
    out = TextOutput("g", [], OutputSplitter(mlx_format("json_tools"), TOOLS), parallel_tool_calls=False)
    events = []
    for ch in "Let me check.\n" + FENCED + "\nIt is sunny.":
        events += out.feed(ch)
        if out.stop_now:
            break
    events += out.finish()
    assert [e["type"] for e in events if e["type"] != "delta"] == ["tool_call"]
    assert "".join(e["text"] for e in events if e["type"] == "delta") == "Let me check.\n"
    assert events[-1]["type"] == "tool_call" and events[-1]["arguments"] == {"city": "Paris"}


def test_schema_subset():
    s = {"type": "object", "properties": {
        "n": {"type": "integer"}, "x": {"type": "number"}, "b": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "mode": {"enum": ["a", "b"]}, "v": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "o": {"type": "object", "properties": {"k": {"type": "string"}}, "required": ["k"]}},
        "required": ["n"], "additionalProperties": False}
    ok = {"n": 3, "x": 1.5, "b": True, "tags": ["t"], "mode": "a", "v": None, "o": {"k": "z"}}
    assert conform(ok, s) == ok
    assert conform({"n": "30", "b": "false"}, s) == {"n": 30, "b": False}  # quoted scalars undone
    assert conform({"n": 2.0}, s) == {"n": 2.0}
    for bad in ({}, {"n": 1.5}, {"n": True}, {"n": 1, "z": 0}, {"n": 1, "tags": []},
                {"n": 1, "tags": [1]}, {"n": 1, "mode": "c"}, {"n": 1, "v": 3}, {"n": 1, "o": {}}):
        with pytest.raises(Invalid):
            conform(bad, s)
    assert conform({"anything": 1}, {}) == {"anything": 1}  # no schema: anything goes


def test_helpers():
    assert tool_schemas(None) is None and tool_schemas([{"type": "function", "function": {"name": "A"}}]) == {"A": {}}
    assert [json_head(s) for s in ('{', '{"na', '{"name"', '{"city"', "[", "[{", "[1", "{x")] == \
        ["maybe", "maybe", "yes", "no", "maybe", "maybe", "no", "no"]
    sc = JsonScanner()
    assert sc.advance('{"a": "}{[", "b": [1') is None and sc.closers() == "]}"
    assert JsonScanner().advance('{"a": 1}] x') == 8 and JsonScanner().advance('{"a": ]') == -1
    schemas = tool_schemas(TOOLS)
    assert parse_json_calls(BARE, schemas) == [PARIS]
    assert parse_json_calls(BARE[:-1], schemas) is None
    assert parse_json_calls(BARE[:-1], schemas, repair=True) == [PARIS]


def test_prose_after_a_call_ends_the_turn_a_closing_fence_does_not():
    out = TextOutput("g", [], OutputSplitter(mlx_format("json_tools"), TOOLS))
    out.feed(FENCED + "\n")
    assert out.calls == 1 and not out.stop_now  # a second call may follow
    out.feed("```json\n" + '{"name": "Bash", "arguments": {"command": "ls"}}\n```\n')
    assert out.calls == 2 and not out.stop_now
    out.feed("The weather in Paris is sunny.")
    assert out.stop_now
