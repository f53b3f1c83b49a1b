"""Write a tiny random-weight model that mlx_lm.load accepts, fully offline.

Usage: python3 python_bridge/make_tiny_model.py OUTDIR

The model is a qwen2-type transformer (hidden 64, 1 layer) with random,
deterministic weights and a byte-level BPE tokenizer trained on the spot, plus
a Qwen2.5-style ChatML chat template (Hermes tools, <tool_call> JSON). Its text
is gibberish: it exists for tests, CI and the demo. Idempotent: a complete
model with the same generator version is left alone.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Optional

GENERATOR_VERSION = 1
MARKER = "pensieve-tiny-model.json"
SEED = 1234
# Room for the Claude Code first-turn fixture (~25k tokens with this tokenizer) and more.
CONTEXT_LENGTH = 65536
VOCAB_SIZE = 1024
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Plain added tokens, as Qwen2.5 has them, so tool-call markers are single tokens.
ADDED_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
FILES = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
]

CONFIG = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 64,
    "intermediate_size": 128,
    # One layer on purpose: on MLX's CPU build, prefill cost is the attention of every
    # layer but the last (whose output only the final token needs), so one layer makes a
    # 25k-token prompt take ~0.2 s instead of ~30 s.
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "max_position_embeddings": CONTEXT_LENGTH,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
    "hidden_act": "silu",
}

CHAT_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

_CORPUS_SEED = """
You are a helpful assistant. The user asks a question and the assistant answers it.
Hello! How can I help you today? Please read the file and run the tests.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
You are Claude Code, an interactive command line tool that helps users with software
engineering tasks. Use the instructions below and the tools available to you.
IMPORTANT: Assist with defensive security tasks only. Refuse to create code that may be
used maliciously. When the user asks about a file, read it before you change it.
# Tools
You may call one or more functions to assist with the user query.
<tools></tools> <tool_call></tool_call> <tool_response></tool_response>
{"type": "function", "function": {"name": "Bash", "description": "Executes a given bash
command", "parameters": {"type": "object", "properties": {"command": {"type": "string",
"description": "The command to execute"}, "timeout": {"type": "number"}}, "required":
["command"], "additionalProperties": false, "$schema": "http://json-schema.org/draft-07/schema#"}}}
def main(argv):\n    for i in range(10):\n        print(i)\n    return 0\n
function handler(request) { const body = await request.json(); return new Response(body); }
import os, sys, json; from pathlib import Path; class Model: pass
The memory is safe. The server streams text deltas, token counts and stop reasons.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 2048 4096 32768 3.14 -1 true false null
Punctuation: . , ; : ! ? ' " ( ) [ ] { } < > / \\ | - _ = + * & ^ % $ # @ ~ `
"""


def _corpus() -> list[str]:
    # Repeat with variations so frequent English/JSON/code pieces become merges.
    lines = [ln for ln in _CORPUS_SEED.strip().splitlines() if ln.strip()]
    out = []
    for i in range(40):
        for j, ln in enumerate(lines):
            out.append(ln if (i + j) % 3 else ln.lower())
    out.append(CHAT_TEMPLATE)
    return out


def is_complete(outdir: Path, kind: Optional[str] = None, version: int = GENERATOR_VERSION) -> bool:
    """A complete model of this generator's `kind` (None: the plain tiny model) and version."""
    try:
        info = json.loads((outdir / MARKER).read_text())
    except (OSError, ValueError):
        return False
    # "kind" marks the other fixture models (tool, think) written the same way.
    return info.get("generator_version") == version and info.get("kind") == kind and all(
        (outdir / f).is_file() for f in FILES
    )


def _write_json(path: Path, obj) -> None:
    _write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


def _write_bytes(path: Path, data: bytes) -> None:
    # Write-then-rename so a concurrent reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def build_tokenizer(extra_tokens: tuple = ()):
    """The BPE tokenizer; extra_tokens become plain added tokens (one id each)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers import AddedToken

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(ADDED_TOKENS),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False)
                    for t in (*ADDED_TOKENS, *extra_tokens)])
    return tok


def build_weights(vocab_size: int, config: dict = CONFIG) -> dict:
    import numpy as np
    from mlx_lm.models.qwen2 import Model, ModelArgs
    from mlx.utils import tree_flatten

    cfg = dict(config, vocab_size=vocab_size)
    model = Model(ModelArgs.from_dict(cfg))
    rng = np.random.default_rng(SEED)
    weights = {}
    # Sorted names so the weights are the same on every machine.
    for name, param in sorted(tree_flatten(model.parameters()), key=lambda kv: kv[0]):
        if name.endswith("norm.weight"):
            arr = np.ones(param.shape, dtype=np.float32)
        else:
            arr = (rng.standard_normal(param.shape) * 0.02).astype(np.float32)
        weights[name] = arr
    return weights


def make(outdir: Path) -> bool:
    """Write the model into outdir; return False when it was already there."""
    if is_complete(outdir):
        return False
    tok = build_tokenizer()
    write_model(outdir, tok, build_weights(tok.get_vocab_size()), CONFIG, {
        "generator_version": GENERATOR_VERSION,
        "demo": True,
        "note": "random weights: the text this model writes is gibberish",
    })
    return True


def write_model(outdir: Path, tok, weights: dict, config: dict, marker: dict) -> None:
    """Writes weights, tokenizer and configs, then the marker (last: it means complete)."""
    outdir.mkdir(parents=True, exist_ok=True)
    import mlx.core as mx

    vocab_size = tok.get_vocab_size()
    eos_id = tok.token_to_id("<|im_end|>")
    pad_id = tok.token_to_id("<|endoftext|>")
    fd, tmp = tempfile.mkstemp(dir=outdir, prefix=".model.", suffix=".safetensors")
    os.close(fd)
    mx.save_safetensors(tmp, {k: mx.array(v) for k, v in weights.items()}, {"format": "mlx"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, outdir / "model.safetensors")

    _write_bytes(outdir / "tokenizer.json", tok.to_str(pretty=True).encode())
    _write_json(outdir / "config.json", dict(config, vocab_size=vocab_size,
                                             eos_token_id=eos_id, bos_token_id=None))
    _write_json(outdir / "generation_config.json",
                {"eos_token_id": [eos_id, pad_id], "pad_token_id": pad_id, "do_sample": True})
    _write_json(outdir / "special_tokens_map.json",
                {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                 "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    _write_json(outdir / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": CONTEXT_LENGTH,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    })
    # The marker goes last: its presence means every other file is complete.
    _write_json(outdir / MARKER, marker)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print("usage: make_tiny_model.py OUTDIR", file=sys.stderr)
        return 0 if len(argv) == 2 else 2
    outdir = Path(argv[1]).resolve()
    made = make(outdir)
    print(f"tiny model {'written to' if made else 'already present in'} {outdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
