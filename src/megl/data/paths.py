"""Paths read from annotation files must stay inside their root."""

from __future__ import annotations

import posixpath
from pathlib import Path


class UnsafePath(ValueError):
    pass


def safe_join(root: Path, name: str) -> Path:
    """`root / name` for a relative `name` that cannot leave `root`.

    The check is lexical on purpose: a data root whose folders are symlinks to a big image
    store (common for COCO) stays usable, while `../x`, `/etc/x` and `a/../../x` are refused.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise UnsafePath(f"invalid file name {name!r}")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise UnsafePath(f"absolute path {name!r}")
    normal = posixpath.normpath(unified)
    if normal == ".." or normal.startswith("../"):
        raise UnsafePath(f"{name!r} escapes {root}")
    return root / normal
