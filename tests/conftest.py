import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    """The interpreter's bin dir: stages and dvc are run from the same environment as the tests."""
    return Path(sys.executable).parent
