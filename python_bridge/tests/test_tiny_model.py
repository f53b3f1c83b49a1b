"""scripts/make-tiny-model: a complete, loadable model, made once."""

import json
import os
import subprocess
import sys
from pathlib import Path

import make_tiny_model as mtm

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make-tiny-model"


def test_model_is_complete_with_marker(tiny_model):
    for name in mtm.FILES:
        assert (tiny_model / name).is_file(), name
    marker = json.loads((tiny_model / mtm.MARKER).read_text())
    assert marker["generator_version"] == mtm.GENERATOR_VERSION
    tok_cfg = json.loads((tiny_model / "tokenizer_config.json").read_text())
    assert tok_cfg["eos_token"] == "<|im_end|>" and "<tool_call>" in tok_cfg["chat_template"]


def test_wrapper_is_idempotent_and_leaves_a_complete_model_alone(tiny_model):
    before = {p.name: p.stat().st_mtime_ns for p in tiny_model.iterdir()}
    env = {**os.environ, "PENSIEVE_PYTHON": sys.executable}
    res = subprocess.run([str(SCRIPT), str(tiny_model)], capture_output=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    assert b"already present" in res.stderr
    assert {p.name: p.stat().st_mtime_ns for p in tiny_model.iterdir()} == before


def test_incomplete_model_is_rebuilt(tmp_path):
    out = tmp_path / "m"
    assert mtm.make(out) is True
    (out / "tokenizer.json").unlink()
    assert not mtm.is_complete(out)
    assert mtm.make(out) is True
    assert mtm.is_complete(out) and mtm.make(out) is False


def test_weights_are_deterministic(tmp_path):
    a, b = mtm.build_weights(300), mtm.build_weights(300)
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)
