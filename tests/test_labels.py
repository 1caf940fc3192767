import pytest

from megl.config import LabelConfig
from megl.data.labels import Labeller, majority, normalise_answer, select_classes


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Dog", "dog"),
        ("a Dog.", "dog"),
        ("The  red\ncircle!", "red circle"),
        ("two", "2"),
        ("1,000", "1000"),
        ("t-shirt", "t-shirt"),
        ("man's hat", "man's hat"),
        ("  ", ""),
    ],
)
def test_normalise_answer(raw, expected):
    assert normalise_answer(raw) == expected


def test_majority_breaks_ties_by_first_seen():
    assert majority(["cat", "dog", "dog", "cat"]) == "cat"
    assert majority(["", "", "bus"]) == "bus"
    assert majority([]) is None


def labels(**kw):
    base = dict(min_samples_per_class=1, max_classes=10)
    base.update(kw)
    return LabelConfig(**base)


def test_object_label_is_most_frequent_normalised_answer_with_aliases():
    lab = Labeller(labels(question_patterns=("^what",), aliases={"puppy": "dog"}), "objects")
    assert lab.label(("Puppy", "puppy", "a dog", "cat")) == "dog"
    assert lab.asks_identity("What kind of animal is this?")
    assert not lab.asks_identity("Is it raining?")
    assert not lab.asks_identity(None)


def test_exclusions():
    lab = Labeller(labels(question_patterns=("^what",), exclude_answers=("Yes",)), "objects")
    assert lab.excluded("yes") and lab.excluded("3") and not lab.excluded("bus")
    keep_numbers = Labeller(labels(question_patterns=("^what",), exclude_numeric_answers=False), "objects")
    assert not keep_numbers.excluded("3")


def test_activity_coarsening():
    fine = Labeller(labels(), "actions")
    coarse = Labeller(labels(coarsen=True), "actions")
    assert fine.label(("Bicycling,  mountain",)) == "bicycling, mountain"
    assert coarse.label(("Bicycling,  mountain",)) == "bicycling"
    assert coarse.label(("running",)) == "running"


def test_select_classes_min_then_max_with_name_ties():
    counts = {"a": 5, "b": 5, "c": 9, "d": 1}
    kept, small, over = select_classes(counts, labels(min_samples_per_class=2, max_classes=2))
    assert small == {"d"}
    assert kept == ["a", "c"]  # c most frequent; a beats b on the name tie
    assert over == {"b"}
