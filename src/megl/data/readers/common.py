"""Pieces every raw-layout reader shares: explanations, image lookup, the visual-map index."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from megl.data.json_files import duplicate_keys, expect_mapping, load_json
from megl.data.paths import UnsafePath, safe_join
from megl.data.records import DataError, ReadResult, Rejection

MAP_SUFFIXES = (".npz", ".npy")


class RecordError(ValueError):
    """One annotation entry cannot be used; carries the rejection reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def clean_explanations(value: Any, result: ReadResult) -> tuple[str, ...]:
    """A str or list of str -> stripped, single-line explanations; empty ones are dropped and counted.

    Newlines are folded to spaces here because a newline in a METEOR hypothesis or reference
    deadlocks pycocoevalcap's Java wrapper (docs/reference.md).
    """
    if value is None:
        raise RecordError("missing_explanation", "no explanation field")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise RecordError("malformed_record", f"explanation must be a string or a list of strings, got {value!r:.80}")
    cleaned = [" ".join(x.split()) for x in items]
    kept = tuple(x for x in cleaned if x)
    if not kept:
        raise RecordError("missing_explanation", "every explanation is empty")
    result.empty_explanations_dropped += len(cleaned) - len(kept)
    return kept


def checked_image_name(name: Any, image_root: Path) -> str:
    """Validate an image name read from an annotation file (relative, inside the image root)."""
    if not isinstance(name, str):
        raise RecordError("malformed_record", f"image name must be a string, got {name!r:.80}")
    try:
        safe_join(image_root, name)
    except UnsafePath as exc:
        raise RecordError("unsafe_path", str(exc)) from None
    return name


def require(record: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(record, dict):
        raise RecordError("malformed_record", f"entry must be an object, got {type(record).__name__}")
    if key not in record:
        raise RecordError("malformed_record", f"missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RecordError("malformed_record", f"field {key!r} has the wrong type ({type(value).__name__})")
    return value


def index_visual_maps(visual_dir: Path, splits: tuple[str, ...]) -> dict[str, Path]:
    """Map file stem -> path for the .npz/.npy files in visual_dir/<split>/ (and visual_dir itself).

    The release's file naming is unconfirmed (docs/reference.md), so readers look a sample up by
    each of its plausible ids (question id, key, image id) in this index.
    """
    index: dict[str, Path] = {}
    if not visual_dir.is_dir():
        return index
    for folder in (visual_dir, *(visual_dir / s for s in splits)):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix in MAP_SUFFIXES and path.is_file():
                index.setdefault(path.stem, path)
    return index


def take_visual(index: dict[str, Path], used: set[str], *candidates: str) -> tuple[Path, ...]:
    for stem in candidates:
        if stem in index:
            used.add(stem)
            return (index[stem],)
    return ()


def reject(result: ReadResult, sample_id: str, source: Path, error: RecordError) -> None:
    result.rejections.append(Rejection(str(sample_id), error.reason, str(source), error.detail))


def split_files(raw_dir: Path, pattern: str, splits: tuple[str, ...]) -> list[tuple[str, Path]]:
    """The layout's per-split annotation files; all must exist (a missing one is a clear error)."""
    files = [(split, raw_dir / pattern.format(split=split)) for split in splits]
    missing = [str(p) for _, p in files if not p.is_file()]
    if missing:
        raise DataError(f"annotation file(s) not found: {', '.join(missing)} (layout expects {pattern})")
    return files


def entries(path: Path, result: ReadResult, seen: set[str], what: str) -> Iterator[tuple[str, Any]]:
    """The {id: record} entries of one split file, each id once: repeats in the file or across
    the split files are rejected as duplicate_id (the first occurrence stays)."""
    data = expect_mapping(load_json(path, track_duplicates=True), path, what)
    for key in duplicate_keys(data):
        reject(result, key, path, RecordError("duplicate_id", "repeated key in this file"))
    for key, record in data.items():
        if key in seen:
            reject(result, key, path, RecordError("duplicate_id", "already read from an earlier split file"))
            continue
        seen.add(key)
        yield key, record
