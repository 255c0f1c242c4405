"""Percentiles for every benchmark (linear interpolation, as numpy's default), so the
figures of different benchmarks are computed the same way."""
from __future__ import annotations


def pct(values, q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)
