"""A Hugging Face tokenizer built straight from a GGUF vocabulary.

Every token keeps its GGUF id. CONTROL tokens become special added tokens
and USER_DEFINED ones plain added tokens, so `<|im_start|>` or `<tool_call>`
encode as one id (transformers' GGUF converter split `<tool_call>` in four).
Two vocab styles: gpt2 (byte-level BPE with merges: Qwen, Llama 3) and
llama (SentencePiece pieces with scores: Gemma, Mistral, Llama 2), the
latter as a BPE whose merge ranks follow the scores, as llama.cpp merges.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models
from tokenizers import normalizers, pre_tokenizers, processors

from .fallback_templates import fallback_template
from .progress import log

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# llama.cpp's pre-tokenizer regexes (llama-vocab.cpp), by tokenizer.ggml.pre.
_QWEN2 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
          r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
           r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_TEKKEN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
           r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
           r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_REGEX = {
    "qwen2": _QWEN2, "deepseek-r1-qwen": _QWEN2,
    "llama-bpe": _LLAMA3, "llama3": _LLAMA3, "smaug-bpe": _LLAMA3,
    "gpt2": _GPT2, "default": _GPT2, "tekken": _TEKKEN,
}


class GGUFVocab:
    """The tokenizer.* keys of a GGUF file, as plain Python values."""

    def __init__(self, fields: dict[str, Any]):
        self.model = fields.get("tokenizer.ggml.model", "")
        self.pre = fields.get("tokenizer.ggml.pre", "default")
        self.tokens: list[str] = list(fields["tokenizer.ggml.tokens"])
        n = len(self.tokens)
        self.types: list[int] = list(fields.get("tokenizer.ggml.token_type") or [NORMAL] * n)
        self.scores: Optional[list[float]] = fields.get("tokenizer.ggml.scores")
        self.merges: Optional[list[str]] = fields.get("tokenizer.ggml.merges")
        self.bos = fields.get("tokenizer.ggml.bos_token_id")
        self.eos = fields.get("tokenizer.ggml.eos_token_id")
        self.eot = fields.get("tokenizer.ggml.eot_token_id")
        self.eom = fields.get("tokenizer.ggml.eom_token_id")
        self.pad = fields.get("tokenizer.ggml.padding_token_id")
        self.unk = fields.get("tokenizer.ggml.unknown_token_id")
        self.add_bos = bool(fields.get("tokenizer.ggml.add_bos_token", self.model == "llama"))
        self.add_eos = bool(fields.get("tokenizer.ggml.add_eos_token", False))
        self.add_space_prefix = bool(fields.get("tokenizer.ggml.add_space_prefix", True))
        self.chat_template = fields.get("tokenizer.chat_template")
        self.template_source = "gguf" if self.chat_template else None
        if not self.chat_template and (fb := fallback_template(self.tokens)):
            # No template in the file: the family's own, by its turn tokens (fallback_templates.py).
            self.template_source, self.chat_template, end = fb
            log(f"no chat template in the GGUF; using the {self.template_source} template its vocabulary implies")
            if self.eot is None:
                self.eot = self.tokens.index(end)

    def token(self, idx: Optional[int]) -> Optional[str]:
        return self.tokens[idx] if idx is not None and 0 <= idx < len(self.tokens) else None

    def eos_ids(self) -> list[int]:
        """eos plus end-of-turn/message ids: generation must stop on any."""
        ids = [i for i in (self.eos, self.eot, self.eom) if i is not None]
        return list(dict.fromkeys(ids))


def _vocab_dict(vocab: GGUFVocab) -> dict[str, int]:
    out: dict[str, int] = {}
    for idx, tok in enumerate(vocab.tokens):
        if tok in out:
            log(f"warning: token {tok!r} repeats at ids {out[tok]} and {idx}; keeping the first")
            continue
        out[tok] = idx
    return out


def _byte_level_bpe(vocab: GGUFVocab) -> Tokenizer:
    if not vocab.merges:
        raise ValueError("gpt2-style GGUF vocabulary without tokenizer.ggml.merges")
    merges = [tuple(m.split(" ", 1)) for m in vocab.merges]
    tok = Tokenizer(models.BPE(vocab=_vocab_dict(vocab), merges=merges,
                               ignore_merges=False, fuse_unk=False))
    regex = PRE_REGEX.get(vocab.pre)
    if regex is None:
        log(f"warning: unknown tokenizer.ggml.pre {vocab.pre!r}; using Llama 3's split")
        regex = _LLAMA3
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def spm_merges(vocab: GGUFVocab) -> list[tuple[str, str]]:
    """Merges ranked by the merged piece's score (highest first).

    llama.cpp's SPM tokenizer repeatedly joins the adjacent pair whose join is
    the best-scoring piece; a BPE with these ranks does the same.
    """
    ids = _vocab_dict(vocab)
    found = []
    for idx, piece in enumerate(vocab.tokens):
        if vocab.types[idx] != NORMAL or len(piece) < 2:
            continue
        local = [(piece[:k], piece[k:]) for k in range(1, len(piece))
                 if piece[:k] in ids and piece[k:] in ids]
        local.sort(key=lambda lr: (ids[lr[0]], ids[lr[1]]))
        found.extend((vocab.scores[idx], idx, l, r) for l, r in local)
    found.sort(key=lambda x: (-x[0], x[1]))  # stable: ties keep id order
    return [(l, r) for _s, _i, l, r in found]


def _sentencepiece_bpe(vocab: GGUFVocab) -> Tokenizer:
    if vocab.scores is None:
        raise ValueError("llama-style GGUF vocabulary without tokenizer.ggml.scores")
    unk = vocab.token(vocab.unk) or ("<unk>" if "<unk>" in vocab.tokens else None)
    tok = Tokenizer(models.BPE(vocab=_vocab_dict(vocab), merges=spm_merges(vocab),
                               unk_token=unk, byte_fallback=True, fuse_unk=True,
                               ignore_merges=False))
    steps = [normalizers.Replace(" ", "▁")]
    if vocab.add_space_prefix:  # llama.cpp prefixes each text run with a space
        steps.insert(0, normalizers.Prepend("▁"))
    tok.normalizer = normalizers.Sequence(steps)
    parts = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if vocab.add_space_prefix:
        parts.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(parts)
    return tok


def _add_special_tokens(tok: Tokenizer, vocab: GGUFVocab) -> None:
    """Register CONTROL/USER_DEFINED tokens at their vocab ids (never split)."""
    added = []
    for idx, piece in enumerate(vocab.tokens):
        kind = vocab.types[idx]
        if kind in (CONTROL, USER_DEFINED) or (kind == UNKNOWN and piece):
            added.append((idx, AddedToken(piece, special=kind != USER_DEFINED,
                                    normalized=False, lstrip=False, rstrip=False,
                                    single_word=False)))
    tok.add_special_tokens([a for _i, a in added if a.special])
    tok.add_tokens([a for _i, a in added if not a.special])
    # add_tokens reuses an id when the content is already in the model vocab;
    # check, since a token at a new id would silently shift generation.
    for idx, a in added:
        if tok.token_to_id(a.content) != idx:
            raise ValueError(f"added token {a.content!r} did not keep its GGUF id")


def _post_processor(tok: Tokenizer, vocab: GGUFVocab) -> None:
    bos = vocab.token(vocab.bos) if vocab.add_bos else None
    eos = vocab.token(vocab.eos) if vocab.add_eos else None
    if not (bos or eos):
        return
    single = " ".join(x for x in (bos and f"{bos}:0", "$A:0", eos and f"{eos}:0") if x)
    pair = " ".join(x for x in (single, bos and f"{bos}:1", "$B:1", eos and f"{eos}:1") if x)
    specials = [(t, tok.token_to_id(t)) for t in dict.fromkeys(x for x in (bos, eos) if x)]
    tok.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                       special_tokens=specials)


def build_tokenizer(vocab: GGUFVocab) -> Tokenizer:
    if vocab.model == "gpt2":
        tok = _byte_level_bpe(vocab)
    elif vocab.model == "llama":
        tok = _sentencepiece_bpe(vocab)
    else:
        raise ValueError(f"GGUF tokenizer model {vocab.model!r} is not supported "
                         "(supported: gpt2, llama)")
    _add_special_tokens(tok, vocab)
    _post_processor(tok, vocab)
    return tok


def tokenizer_config(vocab: GGUFVocab) -> dict:
    cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": vocab.add_bos,
        "add_eos_token": vocab.add_eos,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1 << 30,
    }
    for key, idx in (("bos_token", vocab.bos), ("eos_token", vocab.eos),
                     ("pad_token", vocab.pad), ("unk_token", vocab.unk)):
        if (tok := vocab.token(idx)) is not None:
            cfg[key] = tok
    if vocab.chat_template:
        cfg["chat_template"] = vocab.chat_template
    return cfg


def write_tokenizer(vocab: GGUFVocab, out: Path) -> None:
    tok = build_tokenizer(vocab)
    tok.save(str(out / "tokenizer.json"))
    cfg = tokenizer_config(vocab)
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
    specials = {k: cfg[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token") if k in cfg}
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2, ensure_ascii=False))
    if vocab.chat_template:
        (out / "chat_template.jinja").write_text(vocab.chat_template)
