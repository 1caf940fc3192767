"""Model selection by the rule the study declares before its runs (params `study.selection`),
over validation metrics only: a Trial carries no test metric, so no rule can read one.

The rule: maximise `metric`; every trial within `tolerance` of the best counts as tied (on
validation data drawn like train, where the shortcut also works, every configuration may be near
1.0 and accuracy alone ranks noise); among the tied, maximise `tie_break` (the validation maps'
mIoU: the human explanations are training-time data, the premise of explanation-guided learning);
what is still tied goes to the lowest trial number. A trial without a finite value of the metric
(a diverged run) is out of the running, and counted.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Trial:
    variant: str  # the trial's variant name in the study's params
    trial: int
    hyperparameters: dict[str, float]
    val: dict[str, float]  # validation metrics (val.json), nothing else


@dataclasses.dataclass(frozen=True)
class Choice:
    trial: Trial | None
    reason: str
    tied: tuple[str, ...] = ()  # the trials the tie-break chose among
    excluded: tuple[str, ...] = ()  # trials without a finite metric


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def select(trials: list[Trial], metric: str, tolerance: float, tie_break: str | None) -> Choice:
    ok = [t for t in trials if _finite(t.val.get(metric))]
    excluded = tuple(t.variant for t in trials if t not in ok)
    if not ok:
        return Choice(None, f"no trial has a finite {metric}", excluded=excluded)
    best = max(t.val[metric] for t in ok)
    tied = sorted((t for t in ok if t.val[metric] >= best - tolerance), key=lambda t: t.trial)
    names = tuple(t.variant for t in tied)
    if len(tied) == 1:
        return Choice(tied[0], f"best {metric} {best:.4f}", names, excluded)
    breakable = [t for t in tied if tie_break and _finite(t.val.get(tie_break))]
    if not breakable:
        return Choice(tied[0], f"{len(tied)} trials within {tolerance} of the best {metric} {best:.4f}, no "
                                f"{tie_break or 'tie-break'} to tell them apart: the lowest trial number", names, excluded)
    top = max(t.val[tie_break] for t in breakable)
    chosen = next(t for t in breakable if t.val[tie_break] == top)  # sorted by trial: lowest number wins a tie
    return Choice(chosen, f"{len(tied)} trials within {tolerance} of the best {metric} {best:.4f}; "
                          f"highest {tie_break} {top:.4f}", names, excluded)
