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


def train_run(root, experiment, seed=0, digest="d0"):
    with tracking.start_run(True, root, experiment, tracking.run_name("object_me", "resnet18", "megl", seed),
                            {"train": {"seed": seed}}, tracking.run_tags("object_me", "resnet18", "megl", seed)) as run:
        run.log_step(1, {"loss": 1.0})
        run.log_image(np.zeros((4, 4, 3), np.uint8), "cam_gallery.png")
        run.set_tags({tracking.MODEL_DIGEST_TAG: digest})
    return run.run_id


def test_model_digest_names_files_and_bytes(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.bin").write_bytes(b"weights")
    (tmp_path / "a" / "config.json").write_text("{}")
    first = tracking.model_digest(tmp_path / "a")
    assert first == tracking.model_digest(tmp_path / "a") and len(first) == 64
    (tmp_path / "a" / "config.json").write_text("{ }")
    assert tracking.model_digest(tmp_path / "a") != first
    (tmp_path / "a" / "config.json").write_text("{}")
    (tmp_path / "a" / "config.json").rename(tmp_path / "a" / "other.json")  # same bytes, another name
    assert tracking.model_digest(tmp_path / "a") != first


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
    top_level = train_run(root, "exp-b", digest="d-top")  # as `dvc repro` makes it
    parent = tracking.start_sweep(root, "exp-b", "sweep test", {"kind": "sweep"}, {"variants": ["megl"], "max_parallel": 2})
    monkeypatch.setenv(tracking.PARENT_RUN_ENV, parent)
    child = train_run(root, "exp-b", digest="d-child")
    other_seed = train_run(root, "exp-b", seed=1, digest="d-child")
    assert client.get_run(child).data.tags[tracking.PARENT_TAG] == parent
    assert client.get_run(other_seed).info.run_name == "object_me/resnet18/megl/s1"

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "gallery.html").write_text("<p>")
    name = tracking.run_name("object_me", "resnet18", "megl", 0)
    # evaluation goes to the run that exported this model (its digest), not "the newest with these tags"
    assert tracking.log_to_training_run(root, "exp-b", name, TAGS, "d-child", {"test/accuracy": 0.5}, tmp_path / "eval",
                                        "evaluation", {"evaluate.threads": "2", "evaluate.device": "cpu"}) == (child, True)
    assert client.get_run(child).data.metrics["test/accuracy"] == 0.5
    assert client.get_run(child).data.params.items() >= {"evaluate.threads": "2", "evaluate.device": "cpu"}.items()
    assert "evaluate.threads" not in client.get_run(child).data.metrics
    # evaluated again with another fact: the param keeps its value (MLflow's are immutable), a tag says what changed
    tracking.log_to_training_run(root, "exp-b", name, TAGS, "d-child", {"test/accuracy": 0.5}, tmp_path / "eval",
                                 "evaluation", {"evaluate.threads": "4", "evaluate.device": "cpu"})
    run = client.get_run(child)
    assert run.data.params["evaluate.threads"] == "2" and run.data.tags["evaluate.threads.latest"] == "4"
    assert client.get_run(child).info.status == "FINISHED"
    assert "test/accuracy" not in client.get_run(other_seed).data.metrics
    monkeypatch.delenv(tracking.PARENT_RUN_ENV)
    assert tracking.log_to_training_run(root, "exp-b", name, TAGS, "d-top", {"test/accuracy": 0.25}, tmp_path / "eval",
                                        "evaluation") == (top_level, True)
    assert client.get_run(top_level).data.metrics["test/accuracy"] == 0.25
    assert client.get_run(child).data.metrics["test/accuracy"] == 0.5
    assert {a.path for a in client.list_artifacts(top_level, "evaluation")} == {"evaluation/gallery.html"}
    # a model no run of this store exported (tracking was off, another store): a run of its own, saying so
    run_id, found = tracking.log_to_training_run(root, "exp-b", name, TAGS, "d-elsewhere", {"test/accuracy": 0.1},
                                                 tmp_path / "eval", "evaluation")
    run = client.get_run(run_id)
    assert not found and run_id not in (child, top_level) and run.info.run_name == name
    assert run.data.tags[tracking.TRAINED_IN_TAG].startswith("unknown")
    assert run.data.tags[tracking.MODEL_DIGEST_TAG] == "d-elsewhere"
    assert run.data.metrics["test/accuracy"] == 0.1 and run.info.status == "FINISHED"

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


def test_killed_runs_end_killed_and_stale_runs_are_closed(store):
    """Ctrl-C / SIGTERM (SystemExit) end the run KILLED; a run left RUNNING by a hard kill is closed
    as KILLED by the next run of the same name; a resumed run continues its own run."""
    root, client = store
    name = tracking.run_name("object_me", "resnet18", "megl", 5)
    for stop in (KeyboardInterrupt, SystemExit):
        with pytest.raises(stop):
            with tracking.start_run(True, root, "exp-c", name, {"a": 1}, TAGS) as run:
                raise stop()
        assert client.get_run(run.run_id).info.status == "KILLED"
    with pytest.raises(RuntimeError):
        with tracking.start_run(True, root, "exp-c", name, {"a": 1}, TAGS) as run:
            raise RuntimeError("a bug")
    assert client.get_run(run.run_id).info.status == "FAILED"

    # SIGKILL: the run never ends (simulated by a run created and left RUNNING)
    exp_id = client.get_experiment_by_name("exp-c").experiment_id
    orphan = client.create_run(exp_id, run_name=name, tags=TAGS).info.run_id
    other = client.create_run(exp_id, run_name="another/run/name/s0").info.run_id
    resumed = client.create_run(exp_id, run_name=name, tags=TAGS).info.run_id
    client.log_param(resumed, "a", "1")
    with tracking.start_run(True, root, "exp-c", name, {"a": 2, "b": 3}, TAGS, resume_run_id=resumed) as run:
        run.log_step(1, {"loss": 0.5})
    assert run.run_id == resumed
    assert client.get_run(orphan).info.status == "KILLED"  # closed by the resumed run of the same name
    assert client.get_run(other).info.status == "RUNNING"  # another name: not ours to close
    data = client.get_run(resumed).data
    assert client.get_run(resumed).info.status == "FINISHED" and data.params["a"] == "1" and data.params["b"] == "3"
    assert data.tags["resume.a"] == "2"  # changed since the run began: recorded, not overwritten
    # a resume id that is not in the store starts a new run
    with tracking.start_run(True, root, "exp-c", name, {"a": 1}, TAGS, resume_run_id="f" * 32) as run:
        pass
    assert run.run_id != "f" * 32 and client.get_run(run.run_id).info.status == "FINISHED"


def test_database_from_another_checkout_keeps_artifacts_here(tmp_path, monkeypatch):
    """An experiment created by another copy of the project points its artifacts there; the next
    run here repoints it to <this db folder>/mlruns/<experiment>."""
    import shutil

    from mlflow.tracking import MlflowClient

    monkeypatch.delenv(tracking.PARENT_RUN_ENV, raising=False)
    old, new = tmp_path / "old", tmp_path / "new"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{old}/mlflow.db")
    train_run(old, "exp-d")
    shutil.copytree(old, new, ignore=shutil.ignore_patterns("mlruns"))
    shutil.rmtree(old)  # the other checkout is gone
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{new}/mlflow.db")
    run_id = train_run(new, "exp-d")
    client = MlflowClient(f"sqlite:///{new}/mlflow.db")
    assert client.get_experiment_by_name("exp-d").artifact_location == (new / "mlruns" / "exp-d").as_uri()
    assert (new / "mlruns" / "exp-d" / run_id / "artifacts" / "cam_gallery.png").is_file()
    assert not old.exists()


def test_dvc_root_decides_the_default_store(tmp_path, monkeypatch):
    """DVC sets DVC_ROOT to the project, also in a queued experiment's temporary copy: the runs go to
    the project's mlflow.db, not to the copy's (deleted afterwards)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tracking.tracking_uri(tmp_path / "copy") == f"sqlite:///{tmp_path / 'copy'}/mlflow.db"
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "project"))
    assert tracking.tracking_uri(tmp_path / "copy") == f"sqlite:///{tmp_path / 'project'}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/mlflow.db")
    assert tracking.tracking_uri(tmp_path / "copy") == "sqlite:////elsewhere/mlflow.db"


def test_a_split_logged_by_two_runs_at_once_links_to_both(store, tmp_path, monkeypatch):
    """Two cells of a sweep log the same new split at the same moment; the store's look-up-then-insert
    lets both insert it and fails the later on its unique key (PostgreSQL's words below, from a CI
    sweep). The race itself cannot be timed from a test: the store's error is injected once, in
    front of the real call, and the run still gets its splits; any other error is raised."""
    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from megl.layout import data_dir

    root, client = store
    folder = data_dir(tmp_path, "object_me")
    folder.mkdir(parents=True)
    pd.DataFrame({"sample_id": ["a", "b", "c"], "split": ["train", "val", "train"], "label": [0, 1, 1]}).to_parquet(
        folder / "manifest.parquet")
    splits = tracking.DatasetSplits(tmp_path, "object_me", {"train": "train", "val": "validation"})
    real, calls = mlflow.log_inputs, []

    def lose_race_once(error):
        def log_inputs(**kwargs):
            calls.append(error)
            if len(calls) == 1:
                raise MlflowException(error)
            return real(**kwargs)
        return log_inputs

    race = ('(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "dataset_pk"\n'
            "DETAIL:  Key (experiment_id, name, digest)=(1, object_me/train, 2f44f8) already exists.")
    monkeypatch.setattr(mlflow, "log_inputs", lose_race_once(race))
    with tracking.start_run(True, root, "exp-race", "object_me/resnet18/megl/s0", {}, TAGS) as run:
        run.log_datasets(splits)
    assert len(calls) == 2
    assert sorted(i.dataset.name for i in client.get_run(run.run_id).inputs.dataset_inputs) == [
        "object_me/train", "object_me/val"]

    calls.clear()
    monkeypatch.setattr(mlflow, "log_inputs", lose_race_once("RESOURCE_DOES_NOT_EXIST: no run"))
    with pytest.raises(MlflowException, match="no run"):
        with tracking.start_run(True, root, "exp-race", "object_me/resnet18/megl/s1", {}, TAGS) as run:
            run.log_datasets(splits)
    assert len(calls) == 1


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
