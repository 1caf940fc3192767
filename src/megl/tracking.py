"""The only MLflow user. One experiment for the project (`tracking.experiment`, default `megl`).

- A trained model is one run, named `<dataset>/<backbone>/<variant>/s<seed>` and tagged with
  dataset, backbone, variant and seed; evaluation appends its metrics and gallery to that run.
- A Prefect sweep (pipeline/flows.py) is one parent run (`start_sweep` / `finish_sweep`); it hands
  its id to the stage processes in $MEGL_MLFLOW_PARENT_RUN_ID, and every run started while that
  variable is set is nested under it (a child per dataset/backbone/variant/seed). Without the
  variable (`dvc repro`) the same runs are top-level runs of the same experiment.

Tracking URI: $MLFLOW_TRACKING_URI, else sqlite:///<absolute params folder>/mlflow.db (absolute,
because DVC may run a stage from a temporary copy). For a SQLite store, a new experiment keeps its
artifacts next to the database (<db folder>/mlruns/<experiment>), not under the working directory.
mlflow is imported only when tracking is on, so the core trains on a machine without it.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np

from megl.layout import RunKey

PARENT_RUN_ENV = "MEGL_MLFLOW_PARENT_RUN_ID"
PARENT_TAG = "mlflow.parentRunId"  # what MLflow (and its UI) nests runs by
# The UI opens an experiment of this kind on its runs table (MLflow 3 defaults to the GenAI views).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve()}/mlflow.db"


def run_name(dataset: str, backbone: str, variant: str, seed: int) -> str:
    """The run's MLflow name: its grid name, `<dataset>/<backbone>/<variant>/s<seed>`."""
    return RunKey(dataset, backbone, variant, seed).name


def run_tags(dataset: str, backbone: str, variant: str, seed: int) -> dict[str, str]:
    return {"dataset": dataset, "backbone": backbone, "variant": variant, "seed": str(seed)}


def parent_run_id() -> str | None:
    return os.environ.get(PARENT_RUN_ENV) or None


def _flatten(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)[:500]  # MLflow's param value limit
    return out


def _client(root: Path):
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def _artifact_location(uri: str, experiment: str) -> str | None:
    """<db folder>/mlruns/<experiment> for a SQLite store (MLflow's default is ./mlruns of whatever
    the working directory happens to be); None (the server's choice) for any other store."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return (db.resolve().parent / "mlruns" / re.sub(r"[^\w.-]+", "_", experiment)).as_uri()


def experiment_id(root: Path, experiment: str) -> str:
    """The experiment's id, created on first use. Parallel stage processes may race to create it:
    the loser reads the winner's."""
    from mlflow.exceptions import MlflowException

    client = _client(root)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(
            experiment, artifact_location=_artifact_location(tracking_uri(root), experiment), tags=EXPERIMENT_KIND
        )
    except MlflowException:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return found.experiment_id


class NullTracker:
    """Tracking off: every call is a no-op."""

    run_id = None

    def log_step(self, step: int, values: dict[str, float]) -> None: ...
    def log_epoch(self, epoch: int, values: dict[str, float]) -> None: ...
    def log_image(self, image: np.ndarray, name: str) -> None: ...
    def log_table(self, table: dict[str, list], name: str) -> None: ...
    def log_artifacts(self, folder: Path, path: str) -> None: ...
    def finish(self, ok: bool = True) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(ok=exc_type is None)  # a crashed run shows as FAILED, not FINISHED


class MlflowTracker(NullTracker):
    FLUSH_EVERY = 50  # per-step metrics go in batches: one SQLite transaction per step is slow

    def __init__(self, root: Path, experiment: str, run_name: str, params: dict, tags: dict[str, str]) -> None:
        import mlflow

        exp_id = experiment_id(root, experiment)
        self._mlflow = mlflow
        self._client = _client(root)
        # Nested under the sweep's parent run when a Prefect sweep started this process; MLflow
        # checks that the parent exists and is still running.
        self._run = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags, parent_run_id=parent_run_id())
        self.run_id = self._run.info.run_id
        mlflow.log_params(_flatten("", params, {}))
        self._pending: list = []

    def log_step(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(f"train/{k}", float(v), now, step) for k, v in values.items()]
        if len(self._pending) >= self.FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._client.log_batch(self.run_id, metrics=self._pending)
            self._pending = []

    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        self._flush()
        self._mlflow.log_metrics({k: float(v) for k, v in values.items()}, step=epoch)

    def log_image(self, image: np.ndarray, name: str) -> None:
        self._mlflow.log_image(image, artifact_file=name)

    def log_table(self, table: dict[str, list], name: str) -> None:
        self._mlflow.log_table(data=table, artifact_file=name)

    def log_artifacts(self, folder: Path, path: str) -> None:
        self._mlflow.log_artifacts(str(folder), artifact_path=path)

    def finish(self, ok: bool = True) -> None:
        self._flush()
        self._mlflow.end_run(status="FINISHED" if ok else "FAILED")


def start_run(enabled: bool, root: Path, experiment: str, run_name: str, params: dict, tags: dict[str, str]):
    return MlflowTracker(root, experiment, run_name, params, tags) if enabled else NullTracker()


def log_to_training_run(
    root: Path, experiment: str, tags: dict[str, str], metrics: dict[str, float], folder: Path, artifact_path: str
) -> bool:
    """Append metrics and artifacts to the newest training run with these tags (evaluation after
    training). Inside a sweep ($MEGL_MLFLOW_PARENT_RUN_ID) only that sweep's children match;
    outside one, only top-level runs, so a `dvc repro` evaluation never lands in a sweep's child.
    The run id is not stored in the model: that would make identical runs differ."""
    import mlflow

    client = _client(root)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return False
    clauses = [f"tags.`{k}` = '{v}'" for k, v in sorted(tags.items())]
    parent = parent_run_id()
    clauses.append(f"tags.`{PARENT_TAG}` = '{parent}'" if parent else f"tags.`{PARENT_TAG}` IS NULL")
    runs = client.search_runs([found.experiment_id], filter_string=" and ".join(clauses), order_by=["start_time DESC"], max_results=1)
    if not runs:
        return False
    with mlflow.start_run(run_id=runs[0].info.run_id):
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(folder), artifact_path=artifact_path)
    return True


# --- the sweep's parent run (pipeline/flows.py) ------------------------------------------------------


def start_sweep(root: Path, experiment: str, name: str, tags: dict[str, str], params: dict) -> str:
    """Open the parent run of a sweep and return its id (for $MEGL_MLFLOW_PARENT_RUN_ID). It stays
    RUNNING until finish_sweep, so the stage processes can nest their runs under it."""
    from mlflow.entities import Param

    client = _client(root)
    run = client.create_run(experiment_id(root, experiment), run_name=name, tags=tags)
    flat = _flatten("", params, {})
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in sorted(flat.items())])
    return run.info.run_id


def finish_sweep(
    root: Path, run_id: str, ok: bool, metrics: dict[str, float], summary: dict, folders: dict[str, Path]
) -> None:
    """Close the parent run: FINISHED or FAILED, with the sweep's counts as metrics, its summary
    (summary.json) and folders (artifact path -> local folder, e.g. the regenerated tables)."""
    from mlflow.entities import Metric

    client = _client(root)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in sorted(metrics.items())])
    client.log_text(run_id, json.dumps(summary, indent=2, sort_keys=True), "summary.json")
    for artifact_path, folder in folders.items():
        if Path(folder).is_dir():
            client.log_artifacts(run_id, str(folder), artifact_path=artifact_path)
    client.set_terminated(run_id, status="FINISHED" if ok else "FAILED")
