"""Exponential backoff: how long to wait after failures in a row, for every retry loop here
(context polling per location, scheduled segmentation, the API's read retries)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Retry delays after consecutive failures: ``base``, ``base * factor``, ... up to ``max``,
    each varied at random by up to ``jitter`` (a fraction; 0 for exact delays)."""

    base_seconds: float = 60.0
    factor: float = 2.0
    max_seconds: float = 3600.0
    jitter: float = 0.0

    def __post_init__(self) -> None:
        if self.base_seconds <= 0 or self.factor < 1 or self.max_seconds < self.base_seconds \
                or not 0 <= self.jitter < 1:
            raise ValueError("backoff needs base > 0, factor >= 1, max >= base, 0 <= jitter < 1")

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1 = the first)."""
        # The exponent is capped: a float power overflows after about a thousand failures.
        exponent = min(max(failures - 1, 0), 64)
        seconds = min(self.max_seconds, self.base_seconds * self.factor ** exponent)
        if self.jitter and rng is not None:
            seconds *= 1 + rng.uniform(-self.jitter, self.jitter)
        return seconds
