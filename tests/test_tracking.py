"""megl.tracking without training: one experiment, run names and tags, a sweep's parent run with its
children nested through $MEGL_MLFLOW_PARENT_RUN_ID, evaluation landing in the right run; and the
params blocks behind them (tracking, sweep)."""

import json

import numpy as np
import pytest
import yaml

from megl import tracking
from megl.config import ConfigError, load_params

TAGS = tracking.run_tags("object_me", "resnet18", "megl", 0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite store shared by the module (creating one costs seconds) and a client on it."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("tracking")
    uri = f"sqlite:///{root}/db/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv(tracking.PARENT_RUN_ENV, raising=False)
        yield root, MlflowClient(uri)


def train_run(root, experiment, seed=0):
    with tracking.start_run(True, root, experiment, tracking.run_name("object_me", "resnet18", "megl", seed),
                            {"train": {"seed": seed}}, tracking.run_tags("object_me", "resnet18", "megl", seed)) as run:
        run.log_step(1, {"loss": 1.0})
        run.log_image(np.zeros((4, 4, 3), np.uint8), "cam_gallery.png")
    return run.run_id


def test_names_and_tags():
    assert tracking.run_name("object_me", "vit_b16", "text", 2) == "object_me/vit_b16/text/s2"
    assert TAGS == {"dataset": "object_me", "backbone": "resnet18", "variant": "megl", "seed": "0"}


def test_one_experiment_with_artifacts_next_to_the_database(store):
    root, client = store
    run_id = train_run(root, "exp-a")
    experiment = client.get_experiment_by_name("exp-a")
    assert experiment.artifact_location == (root / "db" / "mlruns" / "exp-a").as_uri()
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on its runs
    run = client.get_run(run_id)
    assert run.info.run_name == "object_me/resnet18/megl/s0" and run.data.tags.items() >= TAGS.items()
    assert tracking.PARENT_TAG not in run.data.tags and run.info.status == "FINISHED"
    assert (root / "db" / "mlruns" / "exp-a" / run_id / "artifacts" / "cam_gallery.png").is_file()


def test_sweep_parent_children_and_evaluation(store, monkeypatch, tmp_path):
    root, client = store
    top_level = train_run(root, "exp-b")  # as `dvc repro` makes it
    parent = tracking.start_sweep(root, "exp-b", "sweep test", {"kind": "sweep"}, {"variants": ["megl"], "max_parallel": 2})
    monkeypatch.setenv(tracking.PARENT_RUN_ENV, parent)
    child = train_run(root, "exp-b")
    other_seed = train_run(root, "exp-b", seed=1)
    assert client.get_run(child).data.tags[tracking.PARENT_TAG] == parent
    assert client.get_run(other_seed).info.run_name == "object_me/resnet18/megl/s1"

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "gallery.html").write_text("<p>")
    # inside the sweep, evaluation goes to the sweep's child with the same tags (seed included)
    assert tracking.log_to_training_run(root, "exp-b", TAGS, {"test/accuracy": 0.5}, tmp_path / "eval", "evaluation")
    assert client.get_run(child).data.metrics["test/accuracy"] == 0.5
    assert "test/accuracy" not in client.get_run(other_seed).data.metrics
    # outside it (dvc repro), to the top-level run, even though the sweep's child is newer
    monkeypatch.delenv(tracking.PARENT_RUN_ENV)
    assert tracking.log_to_training_run(root, "exp-b", TAGS, {"test/accuracy": 0.25}, tmp_path / "eval", "evaluation")
    assert client.get_run(top_level).data.metrics["test/accuracy"] == 0.25
    assert client.get_run(child).data.metrics["test/accuracy"] == 0.5
    assert not tracking.log_to_training_run(root, "exp-b", {**TAGS, "seed": "7"}, {}, tmp_path / "eval", "evaluation")
    assert not tracking.log_to_training_run(root, "no-such-experiment", TAGS, {}, tmp_path / "eval", "evaluation")

    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "table2.md").write_text("| x |\n")
    tracking.finish_sweep(root, parent, False, {"runs_finished": 2, "runs_failed": 1},
                          {"failed": {"a/b/c/s0": "boom"}}, {"tables": tmp_path / "tables"})
    run = client.get_run(parent)
    assert run.info.status == "FAILED" and run.info.run_name == "sweep test"
    assert run.data.metrics == {"runs_finished": 2.0, "runs_failed": 1.0} and run.data.params["max_parallel"] == "2"
    assert {a.path for a in client.list_artifacts(parent)} == {"summary.json", "tables"}
    summary = json.loads(open(client.download_artifacts(parent, "summary.json", str(tmp_path))).read())
    assert summary == {"failed": {"a/b/c/s0": "boom"}}


def test_tracking_off_is_a_no_op(tmp_path):
    with tracking.start_run(False, tmp_path, "x", "n", {}, {}) as run:
        run.log_step(1, {"loss": 1.0})
    assert run.run_id is None and not (tmp_path / "mlflow.db").exists()


def write_params(repo, tmp_path, **blocks):
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    for name, value in blocks.items():
        raw[name] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path / "params.yaml"


def test_params_blocks(repo, tmp_path):
    params = load_params(repo / "params.yaml")
    assert params.tracking.experiment == "megl"
    assert params.sweep.max_parallel >= 1 and params.sweep.retries >= 0 and params.sweep.retry_delay_s >= 0
    good = {"max_parallel": 2, "retries": 1, "retry_delay_s": 10}
    for bad, message in (({**good, "max_parallel": 0}, "sweep.max_parallel"), ({**good, "retries": -1}, "sweep.retries"),
                         ({**good, "retry_delay_s": -1}, "sweep.retry_delay_s"), ({**good, "parallel": 1}, "unknown key")):
        with pytest.raises(ConfigError, match=message):
            load_params(write_params(repo, tmp_path, sweep=bad))
    with pytest.raises(ConfigError, match="unknown key"):  # the old per-dataset experiments are gone
        load_params(write_params(repo, tmp_path, tracking={"enabled": True, "experiment_prefix": "megl", "gallery_samples": 8}))
    with pytest.raises(ConfigError, match="tracking.experiment"):
        load_params(write_params(repo, tmp_path, tracking={"enabled": True, "experiment": " ", "gallery_samples": 8}))
