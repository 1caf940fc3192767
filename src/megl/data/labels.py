"""From raw answers / activities to class labels, with every rule a parameter (params.yaml labels)."""

from __future__ import annotations

import collections
import re

from megl.config import LabelConfig

_ARTICLES = {"a", "an", "the"}
# The VQA evaluation's number-word mapping (Antol et al.), so "two" and "2" are one answer.
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_PUNCT = re.compile(r"[^\w\s'-]")


def normalise_answer(text: str) -> str:
    """VQA-style answer normalisation: lower case, no punctuation, number words as digits, no articles.

    A compact form of the VQA evaluation script's rules; that script is not a maintained package.
    """
    text = text.lower().replace("\n", " ")
    text = re.sub(r"(?<=\d),(?=\d)", "", text)  # 1,000 -> 1000
    text = _PUNCT.sub(" ", text)
    words = [_NUMBER_WORDS.get(w, w) for w in text.split() if w not in _ARTICLES]
    return " ".join(w.strip("'-") for w in words if w.strip("'-"))


def majority(values: list[str]) -> str | None:
    """Most frequent value; ties go to the value seen first (the annotators' order), so it is deterministic."""
    counts = collections.Counter(v for v in values if v)
    if not counts:
        return None
    best = max(counts.values())
    return next(v for v in values if counts.get(v) == best)


class Labeller:
    """Turns a raw sample's answers into a label, or says which filter rejects it."""

    def __init__(self, cfg: LabelConfig, task: str) -> None:
        self.cfg = cfg
        self.task = task
        self._patterns = [re.compile(p, re.IGNORECASE) for p in cfg.question_patterns]
        self._excluded = {self._normalise(a) for a in cfg.exclude_answers}

    def _normalise(self, answer: str) -> str:
        # VQA answers are free text (VQA normalisation); activities and one's own labels are names
        if self.task == "objects":
            return normalise_answer(answer)
        if self.task == "generic":
            return " ".join(answer.split())
        return " ".join(answer.lower().split())

    def asks_identity(self, question: str | None) -> bool:
        return question is not None and any(p.search(question.strip()) for p in self._patterns)

    def label(self, answers: tuple[str, ...]) -> str | None:
        normalised = [self._normalise(a) for a in answers]
        if self.cfg.coarsen:
            normalised = [a.split(",")[0].strip() for a in normalised]
        normalised = [self.cfg.aliases.get(a, a) for a in normalised]
        return majority(normalised)

    def excluded(self, label: str) -> bool:
        return label in self._excluded or (self.cfg.exclude_numeric_answers and label.isdigit())


def select_classes(counts: dict[str, int], cfg: LabelConfig) -> tuple[list[str], set[str], set[str]]:
    """Apply the class-size filters. Returns (kept classes sorted by name, too small, over max).

    Classes below min_samples_per_class go first; of the rest the max_classes most frequent stay
    (ties by name, so the choice does not depend on file order).
    """
    too_small = {c for c, n in counts.items() if n < cfg.min_samples_per_class}
    ranked = sorted((c for c in counts if c not in too_small), key=lambda c: (-counts[c], c))
    kept, over = ranked[: cfg.max_classes], set(ranked[cfg.max_classes :])
    return sorted(kept), too_small, over
