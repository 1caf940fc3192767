"""Is a test accuracy above chance? One rule for the tables (which leave such runs out of every
ranking) and the regression gate (which does not gate a run that was never above chance).

Chance is the majority-class rate of the test split (`chance_accuracy` in test.json): what always
answering the most frequent class scores. A one-sided exact binomial test of the correct count
against it, p < ALPHA, says "above chance"; several seeds pool their counts.
"""

from __future__ import annotations

from scipy.stats import binomtest

ALPHA = 0.01


def above_chance(correct: int, n: int, chance: float, alpha: float = ALPHA) -> bool:
    return binomtest(int(correct), int(n), float(chance), alternative="greater").pvalue < alpha


def runs_above_chance(metrics: list[dict]) -> bool:
    """The pooled test over runs' test.json dicts; True when they do not carry the counts."""
    found = [m for m in metrics if all(isinstance(m.get(k), (int, float)) for k in ("accuracy", "test_samples", "chance_accuracy"))]
    if not found:
        return True
    n = sum(int(m["test_samples"]) for m in found)
    correct = sum(round(float(m["accuracy"]) * int(m["test_samples"])) for m in found)
    return above_chance(correct, n, max(float(m["chance_accuracy"]) for m in found))
