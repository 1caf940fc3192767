"""The generic layout: a dataset of one's own, described by one manifest file.

<raw_dir>/manifest.jsonl   one JSON object per line (blank lines are skipped), or
<raw_dir>/manifest.csv     a header row, then one row per sample (UTF-8, comma-separated)

Fields (JSONL keys / CSV columns):
  image          image file, relative to the image root (default <raw_dir>/images)   required
  label          class name, used as written (whitespace collapsed)                  required
  explanations   textual explanation(s): JSONL a string or a list of strings;         required
                 CSV columns `explanation`, `explanation_2`, ... (empty cells ignored)
  id             unique sample id (default: the image path)
  split          train | val | test: the source split (kept with `split_from: source`)
  visual         visual map file(s), relative to the visual dir (default <raw_dir>): .npy / .npz
                 (the shapes megl.data.visual_maps accepts) or an image mask (.png, .jpg, .bmp,
                 .tif); several files are several annotators. JSONL a string or a list; CSV
                 columns `visual`, `visual_2`, ...

JSONL also accepts `explanation` for `explanations`. An unknown field is a typo, not data: in a
CSV header it stops extraction (it would hit every row); in a JSONL record it rejects that record.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Iterator

from megl.data.paths import UnsafePath, safe_join
from megl.data.readers.common import RecordError, checked_image_name, clean_explanations, reject
from megl.data.records import DataError, RawSample, ReadResult

MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv")
SPLITS = ("train", "val", "test")
_FIELDS = {"id", "image", "label", "split", "explanations", "explanation", "visual"}
_CSV_REPEATED = re.compile(r"^(explanation|visual)(_\d+)?$")


def manifest_file(raw_dir: Path) -> Path:
    found = [raw_dir / name for name in MANIFEST_NAMES if (raw_dir / name).is_file()]
    if not found:
        raise DataError(f"{raw_dir}: no manifest.jsonl or manifest.csv (layout generic)")
    if len(found) > 1:
        raise DataError(f"{raw_dir}: both manifest.jsonl and manifest.csv exist; keep one (layout generic)")
    return found[0]


def _jsonl_records(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: malformed JSON at line {number} column {exc.colno}: {exc.msg}") from None


def _csv_records(path: Path) -> Iterator[tuple[int, dict]]:
    """Rows as records: repeated columns (explanation, explanation_2, ...) become lists."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty file (expected a header row)")
            header = [h.strip() for h in header]
            unknown = [h for h in header if h not in ("id", "image", "label", "split") and not _CSV_REPEATED.match(h)]
            if unknown:
                raise DataError(f"{path}: unknown column(s) {unknown}; known: id, image, label, split, explanation[_N], visual[_N]")
            if len(set(header)) != len(header):
                raise DataError(f"{path}: repeated column name in the header {header}")
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                number = reader.line_num
                if len(row) != len(header):
                    yield number, RecordError("malformed_record", f"{len(row)} cells for {len(header)} columns")
                    continue
                record: dict[str, Any] = {}
                for name, cell in zip(header, row):
                    base = _CSV_REPEATED.match(name)
                    if base:
                        key = "explanations" if base.group(1) == "explanation" else "visual"
                        if cell.strip():
                            record.setdefault(key, []).append(cell)
                    elif cell.strip():
                        record[name] = cell.strip()
                yield number, record
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: malformed CSV: {exc}") from None


def _string(record: dict, key: str, *, required: bool) -> str | None:
    value = record.get(key)
    if value is None:
        if required:
            raise RecordError("malformed_record", f"missing field {key!r}")
        return None
    if isinstance(value, int) and not isinstance(value, bool) and key == "id":
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise RecordError("malformed_record", f"field {key!r} must be a non-empty string, got {value!r:.80}")
    return value.strip()


def _visual_files(value: Any, visual_dir: Path) -> tuple[Path, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(x, str) and x.strip() for x in items):
        raise RecordError("malformed_record", f"field 'visual' must be a file name or a list of them, got {value!r:.80}")
    try:
        return tuple(safe_join(visual_dir, x.strip()) for x in items)
    except UnsafePath as exc:
        raise RecordError("unsafe_path", f"visual map: {exc}") from None


def _sample(record: Any, path: Path, image_root: Path, visual_dir: Path, result: ReadResult) -> RawSample:
    if not isinstance(record, dict):
        raise RecordError("malformed_record", f"a record must be an object, got {type(record).__name__}")
    unknown = sorted(set(record) - _FIELDS)
    if unknown:
        raise RecordError("malformed_record", f"unknown field(s) {unknown}")
    if "explanation" in record and "explanations" in record:
        raise RecordError("malformed_record", "both 'explanation' and 'explanations'")
    image = checked_image_name(_string(record, "image", required=True), image_root)
    label = _string(record, "label", required=True)
    split = _string(record, "split", required=False)
    if split is not None and split not in SPLITS:
        raise RecordError("malformed_record", f"split must be one of {list(SPLITS)}, got {split!r}")
    explanations = clean_explanations(record.get("explanations", record.get("explanation")), result)
    return RawSample(
        sample_id=_string(record, "id", required=False) or image,
        source_split=split or "",
        source_file=str(path),
        image_name=image,
        answers=(" ".join(label.split()),),
        explanations=explanations,
        visual_files=_visual_files(record.get("visual"), visual_dir),
    )


def read(raw_dir: Path, image_root: Path, visual_dir: Path) -> ReadResult:
    result = ReadResult()
    path = manifest_file(raw_dir)
    records = _jsonl_records(path) if path.suffix == ".jsonl" else _csv_records(path)
    seen: set[str] = set()
    for number, record in records:
        where = f"line {number}"
        try:
            if isinstance(record, RecordError):
                raise record
            sample = _sample(record, path, image_root, visual_dir, result)
        except RecordError as err:
            key = record.get("id") or record.get("image") if isinstance(record, dict) else None
            reject(result, str(key) if key else where, path, err)
            continue
        if sample.sample_id in seen:
            reject(result, sample.sample_id, path, RecordError("duplicate_id", f"{where}: id read on an earlier line"))
            continue
        seen.add(sample.sample_id)
        result.samples.append(sample)
    return result
