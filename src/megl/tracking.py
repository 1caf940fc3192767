"""The only MLflow user (with megl.models.mlflow_model, the model it logs). One experiment for the
project (`tracking.experiment`, default `megl`).

- A trained model is one run, named `<dataset>/<backbone>/<variant>/s<seed>` and tagged with
  dataset, backbone, variant and seed, and with the digest of the exported model folder
  (MODEL_DIGEST_TAG). Evaluation appends its metrics and gallery to the run whose tag matches the
  model it evaluates; a model whose run is not in this store (trained with tracking off, or
  elsewhere) gets a run of its own. The model folder holds no run id: the same params give the same
  bytes, so DVC's lock, cache and run-cache agree across runs, clones and hosts.
- The run logs the model folder as an MLflow model (megl.models.mlflow_model), registered as a new
  version of `megl-<dataset>-<backbone>-<variant>`, and the dataset splits it read as its inputs
  (training: train and validation; evaluation: validation and test), each with the digest of the
  data's manifest.
- A run stopped by Ctrl-C or SIGTERM ends KILLED; one killed outright (SIGKILL, power loss) is
  closed as KILLED by the next run of the same name. `--resume` continues the checkpoint's run.
- A Prefect sweep (pipeline/flows.py) is one parent run (`start_sweep` / `finish_sweep`); it hands
  its id to the stage processes in $MEGL_MLFLOW_PARENT_RUN_ID, and every run started while that
  variable is set is nested under it (a child per dataset/backbone/variant/seed). Without the
  variable (`dvc repro`) the same runs are top-level runs of the same experiment.

Tracking URI: $MLFLOW_TRACKING_URI, else sqlite:///<project root>/mlflow.db, where the project root
is $DVC_ROOT when DVC runs the stage (DVC sets it to the project, also for `dvc exp run --queue`,
whose stages run in a temporary copy that is deleted afterwards) and the params file's folder
otherwise. For a SQLite store the experiment keeps its artifacts next to the database
(<db folder>/mlruns/<experiment>); an experiment created by another copy of the project (a
database copied along with it) is pointed back there. mlflow is imported only when tracking is
on, so the core trains on a machine without it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

from megl.interrupts import deferred_signals
from megl.layout import RunKey, data_dir

PARENT_RUN_ENV = "MEGL_MLFLOW_PARENT_RUN_ID"
CELL_ENV = "MEGL_CELL_FLOW_RUN_ID"  # set by a sweep's cell (pipeline/flows.py): its Prefect flow run
CELL_TAG = "prefect.cell_flow_run_id"  # on every run a cell's stages start: which attempt made it
PARENT_TAG = "mlflow.parentRunId"  # what MLflow (and its UI) nests runs by
# The UI opens an experiment of this kind on its runs table (MLflow 3 defaults to the GenAI views).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
MODEL_DIGEST_TAG = "megl.model_sha256"  # on a training run: model_digest() of the folder it exported
TRAINED_IN_TAG = "megl.trained_in_run"  # on an evaluation's own run: why it has no training run


def model_digest(folder: Path) -> str:
    """sha256 over the folder's files (relative path and content): what identifies an exported model."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def tracking_uri(root: Path) -> str:
    project = os.environ.get("DVC_ROOT") or root
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(project).resolve()}/mlflow.db"


def run_name(dataset: str, backbone: str, variant: str, seed: int) -> str:
    """The run's MLflow name: its grid name, `<dataset>/<backbone>/<variant>/s<seed>`."""
    return RunKey(dataset, backbone, variant, seed).name


def run_tags(dataset: str, backbone: str, variant: str, seed: int) -> dict[str, str]:
    return {"dataset": dataset, "backbone": backbone, "variant": variant, "seed": str(seed)}


def registered_model_name(dataset: str, backbone: str, variant: str) -> str:
    """The model registry's name for a run's model; each run (every seed) adds a version."""
    return f"megl-{dataset}-{backbone}-{variant}"


def manifest_digest(folder: Path) -> str:
    """md5 of an extracted dataset's manifest.parquet: the hash dvc.lock records for the file (DVC 3),
    and short enough for MLflow's dataset digest (36 characters at most)."""
    return hashlib.md5((Path(folder) / "manifest.parquet").read_bytes()).hexdigest()


@dataclasses.dataclass(frozen=True)
class DatasetSplits:
    """The splits of one extracted dataset (data/<dataset>/, megl.layout) that a run read, each with
    the context MLflow records it in (split name -> context, e.g. {"val": "validation"})."""

    root: Path
    dataset: str
    contexts: dict[str, str]


def _log_splits(splits: DatasetSplits) -> None:
    """The splits as the active run's inputs; a split the run has already (a resumed run, an
    evaluation after training) stays one input."""
    import warnings

    import mlflow

    with warnings.catch_warnings():
        # a local path matches both of MLflow's local sources (the same class), and the hint about
        # integer columns (inferring the schema, while logging) concerns model signatures, not data
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        datasets = _split_datasets(splits)
        _log_inputs_once_more_after_a_race(datasets, list(splits.contexts.values()))


# What a tracking store (PostgreSQL, SQLite, MySQL) says when an insert hits an existing unique key.
_UNIQUE_VIOLATION = re.compile(r"UniqueViolation|UNIQUE constraint failed|Duplicate entry")


def _log_inputs_once_more_after_a_race(datasets: list, contexts: list[str], attempts: int = 3) -> None:
    """mlflow.log_inputs, again when it lost a race. The store looks up which datasets exist, then
    inserts the others, in two steps: two runs logging the same new split at once (two cells of a
    sweep) both insert it, and the later one fails on the key (experiment, name, digest). By then
    the split exists, so the next call links it; the failed call wrote nothing."""
    import mlflow
    from mlflow.exceptions import MlflowException

    for attempt in range(1, attempts + 1):
        try:
            mlflow.log_inputs(datasets=datasets, contexts=contexts, tags_list=[None] * len(datasets))
            return
        except MlflowException as error:
            if attempt == attempts or not _UNIQUE_VIOLATION.search(str(error)):
                raise
            time.sleep(0.2 * attempt)


def _split_datasets(splits: DatasetSplits) -> list:
    """One MLflow dataset per split, `<dataset>/<split>`, with the manifest's digest and the split's
    rows: MLflow links a dataset (name, digest) to a run once, in one context, so each split is a
    dataset of its own."""
    import mlflow.data
    import pandas as pd

    folder = data_dir(splits.root, splits.dataset)
    manifest = pd.read_parquet(folder / "manifest.parquet")
    digest = manifest_digest(folder)
    source = (folder / "manifest.parquet").relative_to(splits.root).as_posix()  # the same in every clone
    return [
        mlflow.data.from_pandas(manifest[manifest["split"] == split].reset_index(drop=True), source=source,
                                name=f"{splits.dataset}/{split}", digest=digest, targets="label")
        for split in splits.contexts
    ]


def parent_run_id() -> str | None:
    return os.environ.get(PARENT_RUN_ENV) or None


def _cell_tags() -> dict[str, str]:
    cell = os.environ.get(CELL_ENV)
    return {CELL_TAG: cell} if cell else {}


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
    uri = tracking_uri(root)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            return client.create_experiment(experiment, artifact_location=_artifact_location(uri, experiment), tags=EXPERIMENT_KIND)
        except MlflowException:
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise
    _repoint_artifacts(uri, found)
    return found.experiment_id


def _repoint_artifacts(uri: str, experiment) -> None:
    """Point a SQLite store's experiment at <db folder>/mlruns/<experiment> when it points elsewhere
    (the database came from another copy of the project): new runs' artifacts then land next to
    this database, as the README says. MLflow has no API for this, so it is one SQL update of
    the store's experiments table; runs made before keep their artifact URIs."""
    expected = _artifact_location(uri, experiment.name)
    if expected is None or experiment.artifact_location == expected:
        return
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?", (expected, int(experiment.experiment_id)))
    print(f"mlflow: experiment {experiment.name!r} kept its artifacts in {experiment.artifact_location}; "
          f"new runs keep them in {expected}", file=sys.stderr)


def close_stale_runs(client, experiment_id: str, run_name: str, keep: str | None = None) -> list[str]:
    """Mark RUNNING runs of this name KILLED: a run killed outright (SIGKILL, power loss) never
    ended its MLflow run. Returns their ids. `keep` is a run being resumed."""
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.runName` = '{run_name}' and attributes.status = 'RUNNING'",
    )
    stale = [r.info.run_id for r in found if r.info.run_id != keep]
    for run_id in stale:
        client.set_terminated(run_id, status="KILLED")
    return stale


class NullTracker:
    """Tracking off: every call is a no-op."""

    run_id = None

    def log_step(self, step: int, values: dict[str, float]) -> None: ...
    def log_epoch(self, epoch: int, values: dict[str, float]) -> None: ...
    def log_image(self, image: np.ndarray, name: str) -> None: ...
    def log_table(self, table: dict[str, list], name: str) -> None: ...
    def log_artifacts(self, folder: Path, path: str) -> None: ...
    def log_model(self, folder: Path, example: np.ndarray, registered_name: str, tags: dict[str, str]) -> None: ...
    def log_datasets(self, splits: DatasetSplits) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def finish(self, status: str = "FINISHED") -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # Ctrl-C, or SIGTERM turned into SystemExit (megl.run_cli): KILLED; a crash: FAILED
        stopped = exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, SystemExit))
        self.finish(status="FINISHED" if exc_type is None else "KILLED" if stopped else "FAILED")


class MlflowTracker(NullTracker):
    FLUSH_EVERY = 50  # per-step metrics go in batches: one SQLite transaction per step is slow

    def __init__(self, root: Path, experiment: str, run_name: str, params: dict, tags: dict[str, str],
                 resume_run_id: str | None = None) -> None:
        self.run_id = None
        self._pending: list = []
        try:
            with deferred_signals():
                self._start(root, experiment, run_name, params, tags, resume_run_id)
        except (KeyboardInterrupt, SystemExit):  # held back until the run existed: end it KILLED
            if self.run_id:
                self.finish("KILLED")
            raise

    def _start(self, root: Path, experiment: str, run_name: str, params: dict, tags: dict[str, str],
               resume_run_id: str | None) -> None:
        import mlflow

        exp_id = experiment_id(root, experiment)
        self._mlflow = mlflow
        self._client = _client(root)
        resume = resume_run_id if resume_run_id and self._exists(resume_run_id) else None
        close_stale_runs(self._client, exp_id, run_name, keep=resume)
        flat = _flatten("", params, {})
        if resume:
            # the checkpoint's run goes on; a param that changed since is recorded as a tag (MLflow
            # refuses to change a logged param)
            self._run = mlflow.start_run(run_id=resume)
            logged = self._client.get_run(resume).data.params
            mlflow.log_params({k: v for k, v in flat.items() if k not in logged})
            mlflow.set_tags({f"resume.{k}": v for k, v in flat.items() if k in logged and logged[k] != v})
        else:
            # Nested under the sweep's parent run when a Prefect sweep started this process; MLflow
            # checks that the parent exists and is still running.
            self._run = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags | _cell_tags(),
                                         parent_run_id=parent_run_id())
            mlflow.log_params(flat)
        self.run_id = self._run.info.run_id

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_run(run_id)
            return True
        except MlflowException:
            return False

    def log_step(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(f"train/{k}", float(v), now, step) for k, v in values.items()]
        if len(self._pending) >= self.FLUSH_EVERY:
            self._flush()

    @deferred_signals()
    def _flush(self) -> None:
        if self._pending:
            self._client.log_batch(self.run_id, metrics=self._pending)
            self._pending = []

    @deferred_signals()
    def log_epoch(self, epoch: int, values: dict[str, float]) -> None:
        self._flush()
        self._mlflow.log_metrics({k: float(v) for k, v in values.items()}, step=epoch)

    @deferred_signals()
    def log_image(self, image: np.ndarray, name: str) -> None:
        self._mlflow.log_image(image, artifact_file=name)

    @deferred_signals()
    def log_table(self, table: dict[str, list], name: str) -> None:
        self._mlflow.log_table(data=table, artifact_file=name)

    @deferred_signals()
    def log_artifacts(self, folder: Path, path: str) -> None:
        self._mlflow.log_artifacts(str(folder), artifact_path=path)

    @deferred_signals()
    def log_model(self, folder: Path, example: np.ndarray, registered_name: str, tags: dict[str, str]) -> None:
        """The exported folder as an MLflow model, a new version of `registered_name` (megl.models.mlflow_model)."""
        from megl.models.mlflow_model import log_model

        log_model(folder, example, registered_name, tags)

    @deferred_signals()
    def log_datasets(self, splits: DatasetSplits) -> None:
        _log_splits(splits)

    @deferred_signals()
    def set_tags(self, tags: dict[str, str]) -> None:
        self._mlflow.set_tags(tags)

    @deferred_signals()
    def finish(self, status: str = "FINISHED") -> None:
        self._flush()
        self._mlflow.end_run(status=status)


def start_run(enabled: bool, root: Path, experiment: str, run_name: str, params: dict, tags: dict[str, str],
              resume_run_id: str | None = None):
    """A tracker for a training run: MLflow when enabled (continuing `resume_run_id` when it is in
    the store), else a no-op."""
    return MlflowTracker(root, experiment, run_name, params, tags, resume_run_id) if enabled else NullTracker()


def training_run(client, experiment_id: str, run_name: str, digest: str) -> str | None:
    """The newest run of this name that exported the model with this digest, or None."""
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`mlflow.runName` = '{run_name}' and tags.`{MODEL_DIGEST_TAG}` = '{digest}'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    return found[0].info.run_id if found else None


@deferred_signals()
def log_to_training_run(
    root: Path, experiment: str, run_name: str, tags: dict[str, str], digest: str,
    metrics: dict[str, float], folder: Path, artifact_path: str, facts: dict[str, str] | None = None,
    splits: DatasetSplits | None = None,
) -> tuple[str, bool]:
    """Append evaluation's metrics, facts, artifacts and the dataset splits it read (`splits`) to the
    run that trained the model (the run tagged with its digest). When no such run is in this store
    (the model was trained with tracking off, or with another store), the evaluation gets a run of
    its own with the same name and tags, saying so. Facts (how it was evaluated: batch size, threads,
    device) are params, not metrics; a run evaluated again with other facts keeps its first values
    and gets the new ones as tags (MLflow params never change). Returns (run id, whether it is the
    training run)."""
    import mlflow

    client = _client(root)
    exp_id = experiment_id(root, experiment)
    trained_in = training_run(client, exp_id, run_name, digest)
    if trained_in is not None:
        run = mlflow.start_run(run_id=trained_in)
    else:
        extra = {TRAINED_IN_TAG: "unknown: no run in this store exported this model (tracking off, or another store)",
                 MODEL_DIGEST_TAG: digest} | _cell_tags()
        run = mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=tags | extra, parent_run_id=parent_run_id())
    with run:
        mlflow.log_metrics(metrics)
        known = client.get_run(run.info.run_id).data.params
        new = {k: v for k, v in (facts or {}).items() if k not in known}
        if new:
            mlflow.log_params(new)
        changed = {f"{k}.latest": v for k, v in (facts or {}).items() if k in known and known[k] != v}
        if changed:
            mlflow.set_tags(changed)
        mlflow.log_artifacts(str(folder), artifact_path=artifact_path)
        if splits is not None:
            _log_splits(splits)
    return run.info.run_id, trained_in is not None


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


def drop_superseded(root: Path, parent: str, accepted: dict[str, str]) -> list[str]:
    """A sweep publishes each run once: of its children named in `accepted` (run name -> the cell
    flow run the sweep took), delete those another attempt of the same cell made (a cell marked
    Crashed that finished anyway, beside its resubmission). Returns the deleted run ids."""
    client = _client(root)
    parent_run = client.get_run(parent)
    children = client.search_runs([parent_run.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent}'")
    dropped = []
    for run in children:
        keep = accepted.get(run.info.run_name)
        cell = run.data.tags.get(CELL_TAG)
        if keep is not None and cell is not None and cell != keep:
            client.delete_run(run.info.run_id)
            dropped.append(run.info.run_id)
    return dropped


def drop_cell_runs(root: Path, experiment: str, cell_flow_run: str) -> list[str]:
    """Delete every run one cell attempt made (it was superseded: its sweep took another attempt)."""
    client = _client(root)
    found = client.search_runs([experiment_id(root, experiment)], filter_string=f"tags.`{CELL_TAG}` = '{cell_flow_run}'")
    for run in found:
        client.delete_run(run.info.run_id)
    return [run.info.run_id for run in found]


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
