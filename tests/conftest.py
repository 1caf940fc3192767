import sys
from pathlib import Path

import pytest
import yaml

from megl.config import load_params
from megl.data.extract import extract_dataset
from megl.data.saliency import build_saliency
from megl.data.synthetic import generate
from sweep_support import ablation_sweep, prefect_server  # noqa: F401  (one Prefect server and one real sweep, shared by the test modules)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    """The interpreter's bin dir: stages and dvc are run from the same environment as the tests."""
    return Path(sys.executable).parent


@pytest.fixture(scope="session")
def small_params(repo, tmp_path_factory):
    """params.yaml with a 240-sample object_me at 64 px, extracted and aggregated into a temp root."""
    root = tmp_path_factory.mktemp("pipeline")
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["synthetic"]["object_me"].update(num_samples=240, num_classes=4, visual_fraction=0.3)
    raw["train"].update(epochs=2, batch_size=16, eval_batch_size=32)
    raw["tracking"]["enabled"] = False  # on only in the tracking test: training must work without it
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(root / "params.yaml")
    generate(params.synthetic_source("object_me"), params.split, root / "data/raw/object_me")
    ds = params.dataset("object_me")
    extract_dataset("object_me", ds, params.split, root / "data/object_me", root / "metrics/object_me/dataset.json")
    build_saliency("object_me", ds, params.saliency, root / "data/object_me", root / "data/object_me/saliency", root / "s.json")
    return params

