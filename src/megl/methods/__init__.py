"""The registry of methods: one entry each (megl.methods.base.Method), nothing else names a method.

Config validation (which variant keys a method reads), the training objective (its loss terms, its
Grad-CAM), the not-applicable runs (backbones it has no faithful form on), the tables (names,
groups, order) and the study (search spaces) all read an entry. Adding a method: a module with its
loss and its entry, listed in REGISTRY below (docs/methods.md "Adding a method").
"""

from __future__ import annotations

from megl.methods import cdep, megl_terms, mllm, res, rrr, xil
from megl.methods.base import SHARED_SPACE, LogUniform, Method, StepInputs, Uniform

# Table order within a group: the paper's (Table 2: CDEP, HAICS, GRADIA, RES-G, RES-L), then the others
REGISTRY: dict[str, Method] = {m.name: m for m in (
    megl_terms.MEGL, cdep.CDEP, res.HAICS, res.GRADIA, res.RES_G, res.RES_L, rrr.RRR, *xil.METHODS, *mllm.METHODS,
)}

__all__ = ["REGISTRY", "SHARED_SPACE", "LogUniform", "Method", "StepInputs", "Uniform", "get"]


def get(name: str) -> Method:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; the registry (megl.methods) has {sorted(REGISTRY)}") from None
