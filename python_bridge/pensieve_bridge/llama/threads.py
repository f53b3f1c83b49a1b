"""Thread counts chosen by measured speed, per kind of decode (one token / a prefill chunk).

ggml's threads meet at spin barriers after every op. When the cores are shared (other
processes, a busy laptop), a preempted thread stalls the others at each barrier: on two
loaded cores, 2-thread decode fell to 0.5 tok/s where 1 thread ran 11 tok/s, while on idle
cores 2 threads are the faster. So each kind keeps a moving average of seconds per token
for 1 thread and for all cores, uses the faster, and now and then re-measures the other.
"""

from __future__ import annotations

from typing import Optional

ALPHA = 0.3  # weight of the newest measurement in the moving average
# Re-measure the other count after this many calls of a kind. A one-thread probe of a long
# prompt's late chunk costs about a whole chunk more (the ~12k-token bench prompt is 23 chunks).
PROBE_EVERY = {"token": 96, "chunk": 32}
MIN_CHUNK = 128  # chunks shorter than this are not measured
MARGIN = 0.15  # one thread must be this much faster to replace all cores


class ThreadTuner:
    def __init__(self, n_max: int, fixed: Optional[int] = None):
        self.n_max = max(1, int(n_max))
        self.fixed = fixed
        self.candidates = [self.n_max] if fixed or self.n_max == 1 else [self.n_max, 1]
        self.avg: dict[str, dict[int, float]] = {k: {} for k in PROBE_EVERY}
        self.calls = {k: 0 for k in PROBE_EVERY}

    def choose(self, kind: str) -> int:
        """The thread count for the next decode of this kind."""
        if self.fixed:
            return self.fixed
        avg = self.avg[kind]
        for n in self.candidates:  # all cores first, then 1
            if n not in avg:
                return n
        best = self._best(avg)
        other = next((n for n in self.candidates if n != best), best)
        self.calls[kind] += 1
        # A probe of a much slower count is costly: probe it the less often, the slower it was.
        ratio = min(8.0, avg[other] / avg[best]) if avg[best] > 0 else 1.0
        if self.calls[kind] >= PROBE_EVERY[kind] * ratio:
            self.calls[kind] = 0
            return other
        return best

    def _best(self, avg: dict[int, float]) -> int:
        # All cores unless one thread is clearly faster: measurements are noisy on shared
        # cores, and on idle ones all cores win (prefill is compute-bound).
        one = avg.get(1)
        if self.n_max in avg and one is not None and one < avg[self.n_max] * (1 - MARGIN):
            return 1
        return self.n_max

    def record(self, kind: str, n: int, seconds: float, tokens: int) -> None:
        if self.fixed or tokens <= 0 or (kind == "chunk" and tokens < MIN_CHUNK):
            return  # a short chunk's time per token says little about a full one's
        per = seconds / tokens
        avg = self.avg[kind]
        avg[n] = per if n not in avg else (1 - ALPHA) * avg[n] + ALPHA * per

    def describe(self) -> dict:
        return {kind: {str(n): round(1 / v, 1) for n, v in a.items() if v > 0}
                for kind, a in self.avg.items()}
