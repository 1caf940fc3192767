import collections

import pytest

from megl.data.split import assign_splits


def data(n_per_class=(50, 30, 7, 1)):
    ids, labels = [], []
    for c, n in enumerate(n_per_class):
        for i in range(n):
            ids.append(f"s{c}_{i}")
            labels.append(f"class{c}")
    return ids, labels


def test_stratified_counts_per_class():
    ids, labels = data()
    splits = assign_splits(ids, labels, seed=0, val=0.1, test=0.2)
    per = collections.Counter(zip(labels, splits))
    assert (per["class0", "test"], per["class0", "val"], per["class0", "train"]) == (10, 5, 35)
    assert (per["class1", "test"], per["class1", "val"], per["class1", "train"]) == (6, 3, 21)
    assert per["class3", "train"] == 1  # a singleton class keeps its only sample for training


def test_deterministic_and_independent_of_order_and_other_classes():
    ids, labels = data()
    a = dict(zip(ids, assign_splits(ids, labels, seed=3, val=0.1, test=0.2)))
    rev = dict(zip(ids[::-1], assign_splits(ids[::-1], labels[::-1], seed=3, val=0.1, test=0.2)))
    assert a == rev
    only0 = [i for i, lab in zip(ids, labels) if lab == "class0"]
    alone = dict(zip(only0, assign_splits(only0, ["class0"] * len(only0), seed=3, val=0.1, test=0.2)))
    assert all(a[i] == alone[i] for i in only0)


def test_seed_changes_the_split():
    ids, labels = data()
    assert assign_splits(ids, labels, seed=0, val=0.1, test=0.2) != assign_splits(ids, labels, seed=1, val=0.1, test=0.2)


def test_duplicate_ids_rejected():
    with pytest.raises(ValueError, match="unique"):
        assign_splits(["a", "a"], ["x", "x"], seed=0, val=0.1, test=0.2)
