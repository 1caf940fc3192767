"""Deterministic stratified re-split of the pooled source splits.

Each sample's place is decided by a seeded hash of its id, ranked within its class, so the result
depends neither on file order nor on which other classes exist. The synthetic benchmark calls the
same function to plant its decoy on exactly the samples extraction will put in train.
"""

from __future__ import annotations

import collections
import hashlib
import math
from typing import Sequence

SPLIT_NAMES = ("train", "val", "test")


def _rank_key(seed: int, sample_id: str) -> bytes:
    return hashlib.sha256(f"{seed}:{sample_id}".encode()).digest()


def _count(n: int, ratio: float) -> int:
    return math.floor(n * ratio + 0.5)


def assign_splits(sample_ids: Sequence[str], labels: Sequence[str], *, seed: int, val: float, test: float) -> list[str]:
    """Return the split name of each sample; per class: test first, then val, the rest train.

    Every class keeps at least one train sample.
    """
    if len(sample_ids) != len(labels):
        raise ValueError("sample_ids and labels differ in length")
    if len(set(sample_ids)) != len(sample_ids):
        raise ValueError("sample ids must be unique")
    by_class: dict[str, list[int]] = collections.defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    out = [""] * len(sample_ids)
    for members in by_class.values():
        members.sort(key=lambda i: _rank_key(seed, sample_ids[i]))
        n = len(members)
        n_test = min(_count(n, test), n - 1)
        n_val = min(_count(n, val), n - 1 - n_test)
        for rank, i in enumerate(members):
            out[i] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def keep_source_splits(sample_ids: Sequence[str], labels: Sequence[str], sources: Sequence[str], *, seed: int, val: float) -> list[str]:
    """The source's own splits (datasets.<name>.split_from: source), for a benchmark whose test set is
    defined by its protocol (e.g. DecoyFMNIST's 10k test images). Without a source val split, val is
    carved out of source train as assign_splits would (per class, seeded), `val` of each class."""
    bad = sorted({s for s in sources if s not in SPLIT_NAMES})
    if bad:
        raise ValueError(f"source splits must be one of {list(SPLIT_NAMES)}, got {bad[:5]}")
    out = list(sources)
    if "val" in out:
        return out
    train = [i for i, s in enumerate(out) if s == "train"]
    carved = assign_splits([sample_ids[i] for i in train], [labels[i] for i in train], seed=seed, val=val, test=0.0)
    for i, split in zip(train, carved):
        out[i] = split
    return out
