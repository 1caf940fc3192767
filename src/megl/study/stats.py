"""Confidence intervals for the study's tables: Student's t over seeds, and over paired per-seed
differences (the same seed's runs share data order and initialisation, so pairing removes that
shared noise). scipy's t quantile; nothing else here is more than arithmetic."""

from __future__ import annotations

import dataclasses
import math

from scipy import stats as _scipy


@dataclasses.dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    def text(self, fmt: str = "{:.4f}") -> str:
        if self.n < 2:
            return fmt.format(self.mean)
        return f"{fmt.format(self.mean)} ± {self.half_width:.4f}"


def mean_ci(values: list[float], level: float = 0.95) -> Interval:
    """Mean and the two-sided t interval: mean ± t_{(1+level)/2, n-1} · s / √n (s with ddof=1).
    One value has no interval (low = high = the value, n = 1)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_ci of no values")
    n = len(xs)
    mean = sum(xs) / n
    if n == 1:
        return Interval(mean, mean, mean, 1)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(_scipy.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_ci(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> Interval | None:
    """a − b over the seeds both have (keys), with its t interval; None when no seed is shared."""
    shared = sorted(set(a) & set(b))
    if not shared:
        return None
    return mean_ci([a[s] - b[s] for s in shared], level)
