"""The converted packaged weights for tests: `make weights`' folders under weights/ when they are
up to date (CI runs `make weights` first, so the conversion is cached there), else converted into
a temporary folder; skipped with the reason when the carrying package is not installed."""

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))
from import_weights import MODELS, up_to_date  # noqa: E402


def converted(name: str, tmp_factory) -> Path:
    module = importlib.import_module(MODELS[name])
    try:
        source = module.packaged()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    cached = ROOT / "weights" / name
    if up_to_date(cached, source, Path(module.__file__)):
        return cached
    return module.convert(source, tmp_factory.mktemp("weights") / name)
