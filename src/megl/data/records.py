"""What readers hand to extraction: parsed samples and counted rejections."""

from __future__ import annotations

import dataclasses
from pathlib import Path

# Bad input: a sample that cannot be used as given. `on_bad_sample: error` stops on these.
BAD_INPUT_REASONS = {
    "malformed_record": "an annotation entry lacks a required field or has a field of the wrong type",
    "duplicate_id": "the sample id was already read (same file or an earlier split file)",
    "missing_question": "the id is in an explanation file but not in the questions file",
    "missing_answers": "the id is in an explanation file but not in the answers (annotations) file",
    "missing_explanation": "no non-empty textual explanation",
    "unsafe_path": "the image name is absolute or escapes the image root ('..')",
    "missing_image": "the image file does not exist under the image root",
    "corrupt_image": "the image file cannot be decoded (corrupt or truncated)",
}
# Filters: valid input that the dataset definition (params labels block) leaves out.
FILTER_REASONS = {
    "off_topic_question": "the question does not ask for an object's identity (labels.question_patterns)",
    "excluded_answer": "the label is excluded (labels.exclude_answers / exclude_numeric_answers)",
    "class_too_small": "the class has fewer than labels.min_samples_per_class samples",
    "class_over_max": "the class is beyond the labels.max_classes most frequent classes",
}
REJECT_REASONS = {**BAD_INPUT_REASONS, **FILTER_REASONS}

# A bad visual map drops the map, not the sample: it still has a label and a textual explanation.
VISUAL_REJECT_REASONS = {
    "visual_unreadable": "the map file cannot be read as .npy / .npz",
    "visual_bad_shape": "not (K,H,W), (H,W,K) or (H,W) with K <= 8 annotators, or ambiguous npz members",
    "visual_nan": "the map holds NaN or infinite values",
    "visual_all_zero": "every annotator map is constant (all zero): nothing to localise",
}


@dataclasses.dataclass(frozen=True)
class RawSample:
    """One annotation entry as a reader found it, before labelling."""

    sample_id: str
    source_split: str
    source_file: str
    image_name: str  # relative to the image root
    answers: tuple[str, ...]  # VQA: the 10 annotators' answers; ACT-X: the activity
    explanations: tuple[str, ...]
    question: str | None = None
    visual_files: tuple[Path, ...] = ()  # one file per annotator, or one file holding them all


@dataclasses.dataclass(frozen=True)
class Rejection:
    sample_id: str
    reason: str
    source_file: str
    detail: str = ""

    def __post_init__(self) -> None:
        if self.reason not in REJECT_REASONS and self.reason not in VISUAL_REJECT_REASONS:
            raise ValueError(f"unknown rejection reason {self.reason!r}")

    @property
    def is_bad_input(self) -> bool:
        return self.reason not in FILTER_REASONS

    def describe(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.source_file}: sample {self.sample_id!r}: {self.reason}{detail}"


@dataclasses.dataclass
class ReadResult:
    samples: list[RawSample] = dataclasses.field(default_factory=list)
    rejections: list[Rejection] = dataclasses.field(default_factory=list)
    empty_explanations_dropped: int = 0
    orphan_visual_files: int = 0


class DataError(ValueError):
    """Input that stops a stage: a broken annotation file, bad input under on_bad_sample=error, or a
    damaged output of an earlier stage (megl.data.extracted). The message names the file."""
