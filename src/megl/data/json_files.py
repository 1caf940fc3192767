"""Strict JSON loading: errors name the file and the position; duplicate top-level ids are kept visible."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from megl.data.records import DataError


class _PairsDict(dict):
    """A dict that remembers keys that occurred more than once (json keeps only the last silently)."""

    duplicates: list[str]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> _PairsDict:
    out = _PairsDict()
    out.duplicates = []
    for key, value in pairs:
        if key in out:
            out.duplicates.append(key)
            continue  # first occurrence wins, the repeat is reported as duplicate_id
        out[key] = value
    return out


def load_json(path: Path, *, track_duplicates: bool = False) -> Any:
    """Parse a JSON file. With track_duplicates, mappings carry `.duplicates` (repeated keys)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: annotation file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_pairs_hook if track_duplicates else None)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def duplicate_keys(obj: Any) -> list[str]:
    return list(getattr(obj, "duplicates", []))


def expect_mapping(obj: Any, path: Path, what: str) -> dict:
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected {what} (a JSON object at the top level), got {type(obj).__name__}")
    return obj
