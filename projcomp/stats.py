"""Statistics of measured rates: the one confidence interval the evaluations and the theory toys
report (README tables, `python -m projcomp.evaluate`, `projcomp.theory.colours`)."""

from __future__ import annotations

import math

__all__ = ["wilson"]


def wilson(successes: int, n: int, z: float = 1.96) -> tuple:
    """Wilson score 95 % interval of a rate (what the README's intervals are)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (float(max(c - h, 0.0)), float(min(c + h, 1.0)))
