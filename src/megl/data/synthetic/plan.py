"""What every synthetic sample will be, decided before anything is drawn.

The decoy must agree with the label on the samples extraction will put in *train* (and *val* when
the benchmark's validation is drawn like train, `validation: in_distribution`), and be random on
test (and on a `shifted` val). Extraction pools the source splits and re-splits them, so the plan calls the very
same split function (megl.data.split) on the samples that extraction will keep.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from megl.config import SplitConfig, SyntheticConfig
from megl.data.split import assign_splits


@dataclasses.dataclass(frozen=True)
class PlannedSample:
    index: int
    sample_id: str
    class_index: int  # into the benchmark's class catalogue; -1 for a sample meant to be filtered out
    source_split: str  # the raw layout's split file (only val/test carry visual maps, as in VQA-X / ACT-X)
    final_split: str | None  # where extraction will place it; None if extraction filters it out
    decoy_class: int  # class whose grey level the border decoy shows

    @property
    def decoy_agrees(self) -> bool:
        return self.decoy_class == self.class_index

    @property
    def has_visual(self) -> bool:
        return self.source_split != "train"


def sample_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """Independent stream per sample: any sample can be re-rendered alone, in any order."""
    return np.random.default_rng([seed, index, stream])


def plan_samples(
    cfg: SyntheticConfig,
    split_cfg: SplitConfig,
    class_index: list[int],
    class_names: list[str],
    sample_ids: list[str],
) -> list[PlannedSample]:
    """class_index[i] = -1 marks a sample that extraction is expected to filter out."""
    n = len(sample_ids)
    rng = np.random.default_rng([cfg.seed, 1])
    n_visual = round(cfg.visual_fraction * n)
    order = rng.permutation(n)
    source = np.full(n, "train", dtype=object)
    source[order[: n_visual // 2]] = "val"
    source[order[n_visual // 2 : n_visual]] = "test"

    kept = [i for i in range(n) if class_index[i] >= 0]
    final = dict(
        zip(
            kept,
            assign_splits(
                [sample_ids[i] for i in kept],
                [class_names[class_index[i]] for i in kept],
                seed=split_cfg.seed,
                val=split_cfg.val,
                test=split_cfg.test,
            ),
        )
    )
    planned = []
    for i in range(n):
        split = final.get(i)
        r = sample_rng(cfg.seed, i, stream=1)
        drawn_like_train = split == "train" or (split == "val" and cfg.validation == "in_distribution")
        agrees = drawn_like_train and r.random() < cfg.decoy_agreement
        decoy = class_index[i] if agrees else int(r.integers(cfg.num_classes))
        planned.append(PlannedSample(i, sample_ids[i], class_index[i], str(source[i]), split, decoy))
    return planned


def truth_record(p: PlannedSample, label: str, target_box: tuple[float, ...], decoy_box: tuple[float, ...] | None = None) -> dict:
    """One row of synthetic_truth.json: what the benchmark knows that the raw layout does not say."""
    record = {
        "label": label,
        "final_split": p.final_split,
        "source_split": p.source_split,
        "decoy_class": p.decoy_class,
        "decoy_agrees": p.decoy_agrees,
        "target_box": [round(float(v), 2) for v in target_box],
    }
    if decoy_box is not None:
        record["decoy_box"] = [round(float(v), 2) for v in decoy_box]
    return record


def summarise(cfg: SyntheticConfig, names: list[str], plan: list[PlannedSample]) -> dict:
    """Counts a user can check against the extraction report (dataset.json)."""
    by_split: dict[str, dict[str, float]] = {}
    for split in ("train", "val", "test"):
        members = [p for p in plan if p.final_split == split]
        agree = sum(p.decoy_agrees for p in members)
        by_split[split] = {"samples": len(members), "decoy_agreement": round(agree / max(1, len(members)), 4)}
    return {
        "kind": cfg.kind,
        "classes": names,
        "samples_written": len(plan),
        "expected_kept": sum(p.final_split is not None for p in plan),
        "with_visual_maps": sum(p.has_visual for p in plan),
        "final_splits": by_split,
    }
