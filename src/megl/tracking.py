"""The only MLflow user. One experiment per dataset (`<prefix>/<dataset>`), one run per trained model.

Tracking URI: $MLFLOW_TRACKING_URI, else sqlite:///<absolute params folder>/mlflow.db (absolute,
because DVC may run a stage from a temporary copy). mlflow is imported only when tracking is on,
so the core trains on a machine without it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve()}/mlflow.db"


def _flatten(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)[:500]  # MLflow's param value limit
    return out


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
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(tracking_uri(root))
        self._mlflow = mlflow
        self._client = MlflowClient()
        mlflow.set_experiment(experiment)
        self._run = mlflow.start_run(run_name=run_name, tags=tags)
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
    training). The run id is not stored in the model: that would make identical runs differ."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(root))
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        return False
    query = " and ".join(f"tags.{k} = '{v}'" for k, v in sorted(tags.items()))
    runs = mlflow.search_runs([found.experiment_id], filter_string=query, order_by=["start_time DESC"], max_results=1, output_format="list")
    if not runs:
        return False
    with mlflow.start_run(run_id=runs[0].info.run_id):
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(folder), artifact_path=artifact_path)
    return True
