"""Prompt-prefix cache: KV caches of recent generations, reused by common prefix.

LRU, bounded by entry count and bytes. An entry is never altered while it is
shared: a longer entry is copied and the copy trimmed; an entry that is a whole
prefix of the new prompt is moved out and comes back, extended, after the
generation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

GB = 1e9


@dataclass(eq=False)  # identity: entries are removed by object
class Entry:
    tokens: np.ndarray  # int32: the tokens whose KV the cache holds
    cache: list
    nbytes: int
    trimmable: bool


def cache_nbytes(cache: list) -> int:
    total = 0
    for c in cache:
        try:
            total += int(c.nbytes)
        except (AttributeError, NotImplementedError, TypeError):
            pass  # an empty layer cache (keys None) holds nothing
    return total


def cache_length(cache: list) -> Optional[int]:
    """Tokens held by the cache (its first layer's offset), None when unknown."""
    for c in cache:
        off = getattr(c, "offset", None)
        if isinstance(off, int):
            return off
    return None


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token id lists."""
    return _common_prefix(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    m = min(len(a), len(b))
    if m == 0:
        return 0
    diff = np.flatnonzero(a[:m] != b[:m])
    return int(diff[0]) if diff.size else m


def _copy_trimmed(cache: list, length: int, keep: int) -> list:
    """A new cache holding the first `keep` of `length` tokens; `cache` is untouched."""
    from mlx_lm.models.cache import KVCache, trim_prompt_cache

    out = []
    for c in cache:
        if type(c) is KVCache and c.keys is not None:
            # Slices are new arrays: writes to the copy never reach the entry.
            n = KVCache()
            n.keys, n.values, n.offset = c.keys[..., :keep, :], c.values[..., :keep, :], keep
            out.append(n)
        else:
            out.append(copy.deepcopy(c))
    rest = [c for c, o in zip(out, cache) if not (type(o) is KVCache and o.keys is not None)]
    if rest and length > keep:
        trim_prompt_cache(rest, length - keep)
    return out


class PromptCache:
    def __init__(self, max_entries: int = 4, max_bytes: float = 2 * GB):
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)
        self.entries: list[Entry] = []  # least recently used first
        self.hits = 0
        self.misses = 0
        self.tokens_reused = 0

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.entries)

    def fetch(self, ids: list[int]) -> tuple[Optional[list], int]:
        """(cache holding the first n prompt tokens, n), or (None, 0) on a miss."""
        if self.max_entries <= 0 or len(ids) < 2:
            self.misses += 1
            return None, 0
        want = np.asarray(ids, dtype=np.int32)
        limit = len(ids) - 1  # at least one token is always computed
        best, best_n = None, 0
        for e in self.entries:
            n = min(_common_prefix(e.tokens, want), limit)
            whole = n == len(e.tokens)
            if n > best_n and (whole or e.trimmable):
                best, best_n = e, n
        if best is None:
            self.misses += 1
            return None, 0
        self.hits += 1
        self.tokens_reused += best_n
        if best_n == len(best.tokens):
            # The whole entry is a prefix: move it out; it returns extended.
            self.entries.remove(best)
            return best.cache, best_n
        self.entries.remove(best)
        self.entries.append(best)  # most recently used
        return _copy_trimmed(best.cache, len(best.tokens), best_n), best_n

    def store(self, tokens: list[int], cache: list) -> bool:
        """Keeps cache (holding exactly `tokens`) as the most recent entry; True if kept."""
        from mlx_lm.models.cache import can_trim_prompt_cache

        if self.max_entries <= 0 or not tokens:
            return False
        nbytes = cache_nbytes(cache)
        if nbytes > self.max_bytes:
            return False
        arr = np.asarray(tokens, dtype=np.int32)
        entry = Entry(arr, cache, nbytes, bool(can_trim_prompt_cache(cache)))
        if entry.trimmable:
            # An entry whose tokens are a prefix of the new one can serve nothing more.
            self.entries = [e for e in self.entries
                            if not (len(e.tokens) <= len(arr)
                                    and _common_prefix(e.tokens, arr) == len(e.tokens))]
        self.entries.append(entry)
        self._evict(self.max_entries, self.max_bytes)
        return entry in self.entries

    def relieve(self, level: str) -> None:
        """trim: keep at most half the bytes (oldest out); drop: empty."""
        if level == "drop":
            self.entries.clear()
        else:
            self._evict(self.max_entries, self.nbytes // 2)

    def clear(self) -> None:
        self.entries.clear()

    def _evict(self, max_entries: int, max_bytes: int) -> None:
        while self.entries and (len(self.entries) > max_entries or self.nbytes > max_bytes):
            self.entries.pop(0)

    def stats(self) -> dict[str, Any]:
        return {"entries": len(self.entries), "bytes": self.nbytes,
                "max_entries": self.max_entries, "max_bytes": self.max_bytes,
                "hits": self.hits, "misses": self.misses, "tokens_reused": self.tokens_reused}
