"""Sampling defaults from generation_config.json, and the loop guard."""

from __future__ import annotations

import json
import random

import pytest

from pensieve_bridge.params import parse_params
from pensieve_bridge.loops import LoopGuard
from pensieve_bridge.sampling import logits_processors, read_defaults

MSG = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def _config(tmp_path, **cfg):
    (tmp_path / "generation_config.json").write_text(json.dumps(cfg))
    return str(tmp_path)


def test_defaults_come_from_generation_config(tmp_path):
    d = read_defaults([None, _config(tmp_path, temperature=0.7, top_p=0.8, top_k=20,
                                     repetition_penalty=1.05, bos_token_id=1)])
    assert d == {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
    p = parse_params(MSG, d)
    assert (p.temperature, p.top_p, p.top_k, p.repetition_penalty) == (0.7, 0.8, 20, 1.05)


def test_request_values_win_over_the_models(tmp_path):
    d = read_defaults([_config(tmp_path, temperature=0.7, top_k=20, repetition_penalty=1.1)])
    p = parse_params({**MSG, "temperature": 0.0, "top_k": 5, "repetition_penalty": 1.0}, d)
    assert (p.temperature, p.top_k, p.repetition_penalty) == (0.0, 5, 1.0)


def test_no_config_means_anthropics_defaults(tmp_path):
    assert read_defaults([str(tmp_path)]) == {}
    p = parse_params(MSG, {})
    assert (p.temperature, p.top_p, p.top_k, p.repetition_penalty) == (1.0, 1.0, 0, None)


def test_do_sample_false_is_greedy_and_bad_values_are_ignored(tmp_path):
    assert read_defaults([_config(tmp_path, do_sample=False, temperature=0.9)]) == {"temperature": 0.0}
    sub = tmp_path / "b"
    sub.mkdir()
    assert read_defaults([_config(sub, temperature="hot", top_p=3, top_k=-1, max_new_tokens=512)]) \
        == {"max_new_tokens": 512}


def test_repetition_penalty_becomes_a_logits_processor():
    assert logits_processors(None) == [] and logits_processors(1.0) == []
    assert len(logits_processors(1.1)) == 1


def test_loop_guard_stops_a_repeated_pattern_after_its_span():
    g = LoopGuard(60)
    seq = list(range(100, 130)) + [7, 8, 9, 10] * 40
    hit = next(i for i, t in enumerate(seq) if g.push(t))
    # 30 distinct tokens, then the period-4 run reaches 60 tokens at index 30 + 60 - 1.
    assert hit == 89 and g.period == 4


@pytest.mark.parametrize("seed", range(3))
def test_loop_guard_ignores_ordinary_text(seed):
    rnd = random.Random(seed)
    g = LoopGuard(60)
    # Varied tokens with local repeats (common words) never form a 60-token period.
    assert not any(g.push(rnd.choice([rnd.randrange(2000), 11, 12])) for _ in range(20_000))


def test_loop_guard_off_at_zero():
    g = LoopGuard(0)
    assert not any(g.push(5) for _ in range(1000))


def test_a_long_single_token_run_is_a_loop():
    g = LoopGuard(50)
    assert [g.push(3) for _ in range(51)].index(True) == 49




def test_load_reports_the_limits_and_random_weights_get_no_loop_guard(spawn, tiny_model):
    w = spawn()
    loaded = w.load(str(tiny_model), max_output_tokens=12, loop_guard_tokens=80)
    assert loaded["type"] == "loaded", loaded
    assert loaded["max_output_tokens"] == 12 and loaded["loop_guard_tokens"] == 0
    done = w.generate(messages=[{"role": "user", "content": "hi"}], max_tokens=500,
                      temperature=0.0)[-1]
    # max_tokens beyond --max-output-tokens is clamped, reported as max_tokens (length).
    assert done["finish_reason"] == "length" and done["completion_tokens"] == 12


def test_load_refuses_bad_limits(spawn, tiny_model):
    w = spawn()
    bad = w.load(str(tiny_model), max_output_tokens=0)
    assert bad["type"] == "error" and "max_output_tokens" in bad["message"]
