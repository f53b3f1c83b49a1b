"""Prompt-prefix cache for llama.cpp: kept conversations are sequences of one unified KV cache.

Same contract as the MLX PromptCache (fetch by longest common prefix, at most the
prompt length - 1; LRU by entry count and bytes; relieve/clear/stats), but an entry is a
sequence id whose tokens are tracked here. Reusing part of an entry copies its first n
positions to a free sequence (llama_memory_seq_cp shares cells, it copies nothing), so a
kept entry is never altered; an entry that is a whole prefix of the prompt is taken over
and comes back, extended, after the generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from ..prompt_cache import GB, _common_prefix
from .engine import LlamaEngine


@dataclass(eq=False)
class SeqEntry:
    seq: int
    tokens: np.ndarray  # int32: what the sequence's KV holds, position by position


class SeqCache:
    def __init__(self, engine: LlamaEngine, max_entries: int, max_bytes: float):
        self.eng = engine
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)
        self.kv_bytes = engine.kv_bytes_per_token()
        self.entries: list[SeqEntry] = []  # least recently used first
        self.active: Optional[int] = None  # the sequence a running generation owns
        self.hits = self.misses = self.tokens_reused = 0

    @staticmethod
    def sequences(max_entries: int) -> int:
        """n_seq_max for the context: the kept entries plus the running generation's."""
        return max(0, int(max_entries)) + 1

    # -- what the worker reads ---------------------------------------------------

    @property
    def nbytes(self) -> int:
        """KV bytes of the entries, shared prefixes counted once."""
        cells, seen = 0, []
        for e in self.entries:
            shared = max((_common_prefix(e.tokens, s) for s in seen), default=0)
            cells += len(e.tokens) - shared
            seen.append(e.tokens)
        return cells * self.kv_bytes

    def stats(self) -> dict[str, Any]:
        return {"entries": len(self.entries), "bytes": self.nbytes,
                "max_entries": self.max_entries, "max_bytes": self.max_bytes,
                "hits": self.hits, "misses": self.misses, "tokens_reused": self.tokens_reused}

    def relieve(self, level: str) -> None:
        """trim: keep at most half the bytes (oldest out); drop: empty."""
        if level == "drop":
            self.clear()
        else:
            self._evict(self.max_entries, self.nbytes // 2)

    def clear(self) -> None:
        while self.entries:
            self._drop(self.entries[0])

    # -- what a generation does ----------------------------------------------------

    def acquire(self, ids: list[int], count: bool = True) -> tuple[int, int]:
        """(sequence for the generation, prompt tokens it already holds)."""
        best, n = self._best(ids)
        if best is None:
            seq = self._free_seq()
            self.eng.seq_rm(seq)
            if count:
                self.misses += 1
            return self._own(seq), 0
        if count:
            self.hits += 1
            self.tokens_reused += n
        self.entries.remove(best)
        if n == len(best.tokens):  # a whole prefix: take it over
            return self._own(best.seq), n
        self.entries.append(best)  # most recently used; it stays as it is
        seq = self._free_seq()
        self.eng.seq_cp(best.seq, seq, n)
        return self._own(seq), n

    def release(self, seq: int, tokens: list[int]) -> int:
        """Keeps seq (holding exactly `tokens`) as the newest entry; tokens kept (0: none)."""
        self.active = None
        nbytes = len(tokens) * self.kv_bytes
        if self.max_entries <= 0 or not tokens or nbytes > self.max_bytes:
            self.eng.seq_rm(seq)
            return 0
        arr = np.asarray(tokens, dtype=np.int32)
        for e in list(self.entries):  # an entry that is a prefix of this one serves nothing more
            if len(e.tokens) <= len(arr) and _common_prefix(e.tokens, arr) == len(e.tokens):
                self._drop(e)
        entry = SeqEntry(seq, arr)
        self.entries.append(entry)
        self._evict(self.max_entries, self.max_bytes)
        return len(tokens) if entry in self.entries else 0

    def discard(self, seq: int) -> None:
        """The generation failed: its sequence's contents are unknown, never reuse them."""
        self.active = None
        self.eng.seq_rm(seq)

    def make_room(self) -> bool:
        """Drops the oldest entry so a decode finds KV cells; False when none is left."""
        if not self.entries:
            return False
        self._drop(self.entries[0])
        return True

    # -- internals -------------------------------------------------------------------

    def _best(self, ids: list[int]) -> tuple[Optional[SeqEntry], int]:
        if self.max_entries <= 0 or len(ids) < 2:
            return None, 0
        want = np.asarray(ids, dtype=np.int32)
        limit = len(ids) - 1  # at least one token is always computed
        best, best_n = None, 0
        for e in self.entries:
            n = min(_common_prefix(e.tokens, want), limit)
            if n > best_n:
                best, best_n = e, n
        return best, best_n

    def _own(self, seq: int) -> int:
        self.active = seq
        return seq

    def _free_seq(self) -> int:
        used = {e.seq for e in self.entries}
        if self.active is not None:
            used.add(self.active)
        for seq in range(self.eng.n_seq):
            if seq not in used:
                return seq
        # Every sequence is taken (cannot happen with n_seq = entries + 1): free the oldest.
        oldest = self.entries[0]
        self._drop(oldest)
        return oldest.seq

    def _drop(self, e: SeqEntry) -> None:
        self.entries.remove(e)
        self.eng.seq_rm(e.seq)

    def _evict(self, max_entries: int, max_bytes: int) -> None:
        while self.entries and (len(self.entries) > max_entries or self.nbytes > max_bytes):
            self._drop(self.entries[0])


__all__ = ["SeqCache", "SeqEntry", "GB"]
