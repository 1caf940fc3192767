"""Trial hyperparameters: DomainBed's random search (hparams_registry.random_hparams), one seeded
draw per (search seed, method, trial, hyperparameter) from the method's search space (megl.methods:
its entry's `space` plus the space every method shares).

Each hyperparameter has its own random stream, keyed by its name: adding a hyperparameter to a
method's space leaves the draws of the others unchanged, and any trial can be drawn alone. Why not
Optuna's RandomSampler: it draws the same kind of values, but its trial bookkeeping would be a
second record of the runs beside DVC and the study's own files (docs/study.md).
"""

from __future__ import annotations

import hashlib

import numpy as np

from megl.methods.base import Distribution


def _stream(*parts) -> np.random.Generator:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def significant(value: float, digits: int = 3) -> float:
    """Rounded to `digits` significant digits: params.yaml stays readable, and the run uses exactly
    the value it shows."""
    return float(f"{value:.{digits}g}")


def draw(space: dict[str, Distribution], search_seed: int, method: str, trial: int) -> dict[str, float]:
    """The trial's value of every hyperparameter of `space`, in the space's key order."""
    return {name: significant(dist.sample(float(_stream(search_seed, method, trial, name).random())))
            for name, dist in sorted(space.items())}
