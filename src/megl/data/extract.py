"""Extraction: a raw layout -> manifest.parquet, classes.json, images.npy and the dataset report.

Order of checks per sample (the first failing one is its single rejection reason):
record (reader) -> question / label filters -> image decode -> class-size filters.
Every sample read is either kept or rejected with a reason: in = kept + rejected, always.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from megl.atomic import atomic_path, write_json
from megl.config import DatasetConfig, SplitConfig
from megl.data import images as image_io
from megl.data.labels import Labeller, select_classes
from megl.data.readers import image_candidates, read_layout
from megl.data.records import (
    REJECT_REASONS,
    VISUAL_REJECT_REASONS,
    DataError,
    RawSample,
    Rejection,
)
from megl.data.split import SPLIT_NAMES, assign_splits, keep_source_splits
from megl.data.visual_maps import VISUAL_PATH_SEPARATOR, BadMap, load_annotator_maps

MANIFEST_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("split", pa.string()),
        ("image_path", pa.string()),
        ("label", pa.string()),
        ("class_id", pa.int32()),
        ("explanations", pa.list_(pa.string())),
        ("has_visual", pa.bool_()),
        ("visual_path", pa.string()),
        ("source_split", pa.string()),
        ("question", pa.string()),
    ]
)
EXAMPLES_PER_REASON = 5


@dataclasses.dataclass
class _Candidate:
    raw: RawSample
    label: str
    visual_ok: bool = False


class _Rejections:
    """Collects rejections; under on_bad_sample=error the first bad input stops extraction."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.samples: list[Rejection] = []
        self.maps: list[Rejection] = []

    def add(self, rejection: Rejection) -> None:
        self._check(rejection)
        (self.maps if rejection.reason in VISUAL_REJECT_REASONS else self.samples).append(rejection)

    def _check(self, rejection: Rejection) -> None:
        if self.policy == "error" and rejection.is_bad_input:
            raise DataError(f"bad sample (on_bad_sample=error): {rejection.describe()}")

    @staticmethod
    def summary(rejections: list[Rejection], reasons: dict[str, str], root: Path) -> tuple[dict, dict]:
        """Counts for every reason (zeros included, for stable metrics) and a few examples of each."""
        counts = {reason: 0 for reason in sorted(reasons)}
        examples: dict[str, list[str]] = collections.defaultdict(list)
        for r in rejections:
            counts[r.reason] += 1
            if len(examples[r.reason]) < EXAMPLES_PER_REASON:
                # paths relative to the raw dir: the report is committed and must not depend on the clone's path
                examples[r.reason].append(r.describe().replace(f"{root}/", ""))
        return counts, dict(sorted(examples.items()))


def extract_dataset(
    name: str,
    cfg: DatasetConfig,
    split_cfg: SplitConfig,
    out_dir: Path,
    report_path: Path,
) -> dict:
    """Run extraction; returns the report written to report_path, plus the run's seconds."""
    started = time.perf_counter()
    raw_dir = cfg.raw_path
    read = read_layout(cfg.layout, raw_dir, cfg.image_root_path, cfg.visual_dir_path)
    rejections = _Rejections(cfg.on_bad_sample)
    for rejection in read.rejections:
        rejections.add(rejection)

    candidates = _label(read.samples, cfg, rejections)
    candidates = _validate_maps(candidates, rejections)
    candidates, pixels = _decode(candidates, cfg, rejections)
    candidates, pixels, classes = _filter_classes(candidates, pixels, cfg, rejections)

    splits = _splits(candidates, cfg, split_cfg)
    order = sorted(range(len(candidates)), key=lambda i: candidates[i].raw.sample_id)
    manifest = _manifest([candidates[i] for i in order], [splits[i] for i in order], classes, raw_dir)
    pixels = [pixels[i] for i in order]

    total_in = len(read.samples) + len(read.rejections)
    report = _report(name, cfg, manifest, classes, rejections, read, total_in, raw_dir)

    out_dir.mkdir(parents=True, exist_ok=True)
    # Everything is computed before the first rename, so a failure above leaves old outputs intact.
    with atomic_path(out_dir / "manifest.parquet") as tmp:
        pq.write_table(pa.Table.from_pandas(manifest, schema=MANIFEST_SCHEMA, preserve_index=False), tmp)
    image_io.write_store(out_dir / "images.npy", pixels, cfg.image_size)
    write_json(out_dir / "classes.json", classes)
    # The report is gated (metrics/<d>/dataset.json, committed in summary/runs.json): timings stay out of it so reruns are byte-identical.
    write_json(report_path, report)
    return {**report, "seconds": round(time.perf_counter() - started, 3)}


def _splits(candidates: list[_Candidate], cfg: DatasetConfig, split_cfg: SplitConfig) -> list[str]:
    ids, labels = [c.raw.sample_id for c in candidates], [c.label for c in candidates]
    if cfg.split_from == "resplit":
        return assign_splits(ids, labels, seed=split_cfg.seed, val=split_cfg.val, test=split_cfg.test)
    unsplit = [c for c in candidates if c.raw.source_split not in SPLIT_NAMES]
    if unsplit:
        first = unsplit[0].raw
        raise DataError(
            f"{first.source_file}: split_from: source, but {len(unsplit)} kept samples have no train/val/test "
            f"split (first: {first.sample_id!r}); give every record a split or use split_from: resplit"
        )
    return keep_source_splits(ids, labels, [c.raw.source_split for c in candidates], seed=split_cfg.seed, val=split_cfg.val)


def _label(samples: list[RawSample], cfg: DatasetConfig, rejections: _Rejections) -> list[_Candidate]:
    labeller = Labeller(cfg.labels, cfg.task)
    out = []
    for s in samples:
        if cfg.task == "objects" and not labeller.asks_identity(s.question):
            rejections.add(Rejection(s.sample_id, "off_topic_question", s.source_file, repr(s.question)))
            continue
        label = labeller.label(s.answers)
        if label is None:
            rejections.add(Rejection(s.sample_id, "malformed_record", s.source_file, "no usable answer"))
            continue
        if labeller.excluded(label):
            rejections.add(Rejection(s.sample_id, "excluded_answer", s.source_file, repr(label)))
            continue
        out.append(_Candidate(s, label))
    return out


def _validate_maps(candidates: list[_Candidate], rejections: _Rejections) -> list[_Candidate]:
    for c in candidates:
        if not c.raw.visual_files:
            continue
        try:
            load_annotator_maps(c.raw.visual_files)
            c.visual_ok = True
        except BadMap as exc:
            rejections.add(Rejection(c.raw.sample_id, exc.reason, c.raw.source_file, exc.detail))
    return candidates


def _decode(candidates: list[_Candidate], cfg: DatasetConfig, rejections: _Rejections):
    root = cfg.image_root_path
    items = [image_candidates(cfg.layout, root, c.raw.image_name) for c in candidates]
    decoded = image_io.decode_many(items, cfg.image_size, cfg.decode_workers)
    kept, pixels = [], []
    for c, result in zip(candidates, decoded):
        if isinstance(result, image_io.BadImage):
            rejections.add(Rejection(c.raw.sample_id, result.reason, c.raw.source_file, result.detail))
        else:
            kept.append(c)
            pixels.append(result)
    return kept, pixels


def _filter_classes(candidates, pixels, cfg: DatasetConfig, rejections: _Rejections):
    counts = collections.Counter(c.label for c in candidates)
    classes, too_small, over = select_classes(dict(counts), cfg.labels)
    kept, kept_pixels = [], []
    for c, px in zip(candidates, pixels):
        if c.label in too_small:
            rejections.add(Rejection(c.raw.sample_id, "class_too_small", c.raw.source_file, f"{c.label!r}: {counts[c.label]}"))
        elif c.label in over:
            rejections.add(Rejection(c.raw.sample_id, "class_over_max", c.raw.source_file, repr(c.label)))
        else:
            kept.append(c)
            kept_pixels.append(px)
    if not kept:
        raise DataError("no samples left after filtering; see the rejection counts (labels block too strict?)")
    return kept, kept_pixels, classes


def _manifest(candidates, splits, classes, raw_dir: Path) -> pd.DataFrame:
    class_id = {c: i for i, c in enumerate(classes)}

    def visual_path(c: _Candidate) -> str | None:
        if not c.visual_ok:
            return None
        # relative to the raw dir when inside it, so the manifest is portable; several annotator
        # files one per line (VISUAL_PATH_SEPARATOR), so one-file manifests keep their old bytes
        return VISUAL_PATH_SEPARATOR.join(
            str(path.relative_to(raw_dir)) if path.is_relative_to(raw_dir) else str(path) for path in c.raw.visual_files
        )

    return pd.DataFrame(
        {
            "sample_id": [c.raw.sample_id for c in candidates],
            "split": splits,
            "image_path": [c.raw.image_name for c in candidates],
            "label": [c.label for c in candidates],
            "class_id": [class_id[c.label] for c in candidates],
            "explanations": [list(c.raw.explanations) for c in candidates],
            "has_visual": [c.visual_ok for c in candidates],
            "visual_path": [visual_path(c) for c in candidates],
            "source_split": [c.raw.source_split for c in candidates],
            "question": [c.raw.question for c in candidates],
        }
    )


def _report(name, cfg: DatasetConfig, manifest: pd.DataFrame, classes, rejections: _Rejections, read, total_in, root) -> dict:
    sample_counts, sample_examples = _Rejections.summary(rejections.samples, REJECT_REASONS, root)
    map_counts, map_examples = _Rejections.summary(rejections.maps, VISUAL_REJECT_REASONS, root)
    kept = len(manifest)
    rejected = sum(sample_counts.values())
    if total_in != kept + rejected:  # the accounting invariant; a bug if it ever fails
        raise AssertionError(f"in={total_in} != kept={kept} + rejected={rejected}")
    maps_in = sum(1 for s in read.samples if s.visual_files)
    by_split = manifest.groupby("split")
    return {
        "dataset": name,
        "layout": cfg.layout,
        "table1": {
            "samples": kept,
            "textual": int((manifest["explanations"].map(len) > 0).sum()),
            "visual": int(manifest["has_visual"].sum()),
            "classes": len(classes),
        },
        "samples": {"in": total_in, "kept": kept, "rejected": rejected, "rejected_by_reason": sample_counts},
        "visual_maps": {
            "found": maps_in,
            "kept": int(manifest["has_visual"].sum()),
            "rejected_by_reason": map_counts,
            "on_rejected_samples": maps_in - int(manifest["has_visual"].sum()) - sum(map_counts.values()),
            "orphan_files": read.orphan_visual_files,
        },
        "explanations": {
            "total": int(manifest["explanations"].map(len).sum()),
            "empty_dropped": read.empty_explanations_dropped,
        },
        "splits": {s: int(by_split.size().get(s, 0)) for s in SPLIT_NAMES},
        "visual_by_split": {s: int(by_split["has_visual"].sum().get(s, 0)) for s in SPLIT_NAMES},
        "examples": {**sample_examples, **map_examples},
    }
