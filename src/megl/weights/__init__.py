"""Converters from weights that pip packages ship to ordinary transformers folders (`make weights`)."""

import hashlib
from pathlib import Path


def sha256(path: Path) -> str:
    """Of the source file, recorded in each converted folder's megl_source.json."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
