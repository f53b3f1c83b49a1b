"""Thread counts chosen by measured speed, per kind of decode (one token / a prefill chunk).

ggml's threads meet at spin barriers after every op. When the cores are shared (other
processes, a busy laptop), a preempted thread stalls the others at each barrier: on two
loaded cores, 2-thread decode fell to 0.5 tok/s where 1 thread ran 11 tok/s, while on idle
cores 2 threads are the faster. The sign of sharing is the CPU time the decode got: its
threads spin while they wait, so on cores of their own it is about threads x wall time.
While it is, all cores run and nothing is probed. Below that, each kind keeps a moving
average of seconds per token for 1 thread and for all cores, uses the faster, and now and
then re-measures the other.
"""

from __future__ import annotations

from typing import Optional

ALPHA = 0.3  # weight of the newest measurement in the moving average
# Re-measure the other count after this many calls of a kind, while cores are shared. A
# one-thread probe of a long prompt's late chunk costs about a whole chunk more.
PROBE_EVERY = {"token": 96, "chunk": 32}
MIN_CHUNK = 128  # chunks shorter than this are not measured
MARGIN = 0.15  # one thread must be this much faster to replace all cores
# CPU time / (threads x wall) of an all-core decode at or above which its cores are its own.
# Idle cores give 0.95-1.0; one of two cores shared with a busy process about 0.65.
OWN_CORES = 0.85


class ThreadTuner:
    def __init__(self, n_max: int, fixed: Optional[int] = None):
        self.n_max = max(1, int(n_max))
        self.fixed = fixed
        self.candidates = [self.n_max] if fixed or self.n_max == 1 else [self.n_max, 1]
        self.avg: dict[str, dict[int, float]] = {k: {} for k in PROBE_EVERY}
        # Moving average of the all-core decodes' CPU share (None: not measured).
        self.share: dict[str, Optional[float]] = {k: None for k in PROBE_EVERY}
        self.calls = {k: 0 for k in PROBE_EVERY}

    def choose(self, kind: str) -> int:
        """The thread count for the next decode of this kind."""
        if self.fixed:
            return self.fixed
        avg = self.avg[kind]
        if self.n_max not in avg or self.own_cores(kind):
            return self.n_max
        if 1 not in avg:
            return 1
        best = self._best(avg)
        other = next((n for n in self.candidates if n != best), best)
        self.calls[kind] += 1
        # A probe of a much slower count is costly: probe it the less often, the slower it was.
        ratio = min(8.0, avg[other] / avg[best]) if avg[best] > 0 else 1.0
        if self.calls[kind] >= PROBE_EVERY[kind] * ratio:
            self.calls[kind] = 0
            return other
        return best

    def own_cores(self, kind: str) -> bool:
        """Whether the last all-core decodes of this kind had their cores to themselves."""
        share = self.share[kind]
        return share is not None and share >= OWN_CORES

    def _best(self, avg: dict[int, float]) -> int:
        # All cores unless one thread is clearly faster: measurements are noisy on shared
        # cores, and on idle ones all cores win (prefill is compute-bound).
        one = avg.get(1)
        if self.n_max in avg and one is not None and one < avg[self.n_max] * (1 - MARGIN):
            return 1
        return self.n_max

    def record(self, kind: str, n: int, seconds: float, tokens: int,
               cpu_seconds: Optional[float] = None) -> None:
        """One decode's wall time, and the CPU time the process got meanwhile (None: unknown)."""
        if self.fixed or tokens <= 0 or seconds <= 0 or (kind == "chunk" and tokens < MIN_CHUNK):
            return  # a short chunk's time per token says little about a full one's
        per = seconds / tokens
        avg = self.avg[kind]
        avg[n] = per if n not in avg else (1 - ALPHA) * avg[n] + ALPHA * per
        if n == self.n_max and n > 1:
            # None when unknown: the speeds alone decide, as on shared cores.
            share = None if cpu_seconds is None else cpu_seconds / (seconds * n)
            old = self.share[kind]
            self.share[kind] = share if old is None or share is None else (1 - ALPHA) * old + ALPHA * share

    def describe(self) -> dict:
        out: dict = {kind: {str(n): round(1 / v, 1) for n, v in a.items() if v > 0}
                     for kind, a in self.avg.items()}
        out["cpu_share"] = {k: round(v, 2) for k, v in self.share.items() if v is not None}
        return out
