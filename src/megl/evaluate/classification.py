"""Classification metrics (scikit-learn): accuracy, macro precision / recall / F1, per-class F1."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support


from megl.models.contract import NO_CLASS  # noqa: F401  (re-exported: the confusion lists use it)


def classification_metrics(labels: np.ndarray, preds: np.ndarray, classes: list[str]) -> tuple[dict, list[dict], list[dict]]:
    """Flat metrics; per-class F1 rows and (actual, predicted) rows, the shapes DVC plots read."""
    ids = np.arange(len(classes))
    precision, recall, f1, _ = precision_recall_fscore_support(labels, preds, labels=ids, average="macro", zero_division=0)
    flat = {
        "accuracy": float(accuracy_score(labels, preds)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "test_samples": int(len(labels)),
        # what always predicting the most frequent test class scores: the tables' chance level
        "chance_accuracy": float(np.bincount(labels, minlength=len(classes)).max() / len(labels)),
    }
    per_class = f1_score(labels, preds, labels=ids, average=None, zero_division=0)
    f1_rows = [{"class": c, "f1": round(float(v), 6)} for c, v in zip(classes, per_class)]
    # an MLLM answer that names no class (prediction -1) is wrong for every metric and shows as such
    confusion = [{"actual": classes[a], "predicted": classes[p] if p >= 0 else NO_CLASS} for a, p in zip(labels, preds)]
    return flat, f1_rows, confusion
