"""Prefect flows of the project: the sweep `megl/ablation` and the study `megl-study/fair` (served by
pipeline/serve.py), and the cell both fan out, `megl-cell/pool` (run by workers of the work pool
`megl`, on any host).

Every result goes through DVC, and DVC's run-cache is what moves it between hosts:

1. `megl/ablation` checks the request (names, params), refuses a checkout whose code differs from
   its commit (the workers run the commit, not the checkout), opens the MLflow parent run, and
   submits one flow run of `megl-cell/pool` per (dataset, backbone, variant, seed), at most
   `max_parallel` at once, to the pool's work queue of this commit (`commit-<sha>`): only workers
   started at the same commit serve it.
2. A cell, on whichever worker takes it: a scratch git worktree of the worker's clone at the commit
   (pipeline/scratch.py), the sweep's params.yaml with the grid set to this cell, then
   `dvc repro --pull train@<cell> evaluate@<cell>`: the stages dvc.yaml runs, restored from the run-
   cache when any host ran them before, else run. Then `dvc push --run-cache` (pipeline/dvc_push.py:
   with the metrics the run-cache records) puts the outputs and the run-cache in the DVC remote. A cell that fails is retried (params `sweep.retries`), one
   whose worker died (flow run Crashed) is submitted again, to any worker of the queue.
3. The gather, back in `megl/ablation`: a worktree with the sweep's grid, `dvc repro --pull` of the
   finished cells' evaluate stages, which restores each from the run-cache (it trains nothing when
   the cells pushed), then the tables over them, written to results/sweeps/<flow run>/ with the
   sweep's params.yaml. Nothing is written into DVC's output paths of this checkout:
   `cp results/sweeps/<flow run>/params.yaml params.yaml && dvc repro --pull` brings the sweep into
   the workspace from the cache, training nothing.
4. The summary (finished and failed cells with the tail of their output, the tables folder) goes to
   the log, the MLflow parent run, the flow run's artifacts (pipeline/sweep_artifacts.py: a report
   and a table of the runs, in the UI) and its state: Completed when every cell finished, Failed
   with the summary otherwise.

MLflow (params `tracking.enabled`): one parent run per sweep, tagged with the commit; its id and the
tracking URI reach the cells, whose stage processes nest their runs under it (a worker's own
$MLFLOW_TRACKING_URI wins: hosts share an MLflow server).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Literal, Optional

import yaml

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO / "src", REPO / "pipeline"):  # this checkout's library, also when run from a copy of it
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from prefect import flow, get_run_logger, runtime  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.deployments import run_deployment  # noqa: E402
from prefect.states import Failed  # noqa: E402

import scratch  # noqa: E402
import sweep_artifacts  # noqa: E402
from megl import tracking  # noqa: E402
from megl.config import ConfigError, GridConfig, load_params  # noqa: E402
from megl.layout import RunKey, grid_runs  # noqa: E402

PARAMS = REPO / "params.yaml"
POOL = "megl"
CELL_DEPLOYMENT = "megl-cell/pool"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
NO_WORKER_S = 180  # a queue nobody has polled for this long after a submission: no worker serves it
MAX_CRASHES = 3  # a cell whose worker died is submitted again this often, on top of sweep.retries


def _defined_names(block: str) -> object:
    """The names params.yaml defines in `block`, as a Literal: a deployment's parameter form offers
    them as choices, and the API refuses any other name (listing these) before a flow run exists.
    Read when this module is imported (pipeline/serve.py: when it starts). A params.yaml that does
    not load gives plain str: a worker imports this module for its cells, which carry their own
    params, and the sweep's own check names the problem."""
    try:
        names = tuple(sorted(getattr(load_params(PARAMS), block)))
    except ConfigError:
        return str
    return Literal[names] if names else str


DatasetName = _defined_names("datasets")
BackboneName = _defined_names("backbones")
VariantName = _defined_names("variants")


class CellRefused(RuntimeError):
    """This worker's clone is at another commit than the sweep's."""


class NoWorker(RuntimeError):
    """No worker polls the sweep's work queue."""


class CellSuperseded(RuntimeError):
    """This attempt finished after its sweep had given it up (marked Crashed) and taken another."""


def queue_name(commit: str) -> str:
    return f"commit-{commit[:12]}"


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def shared_cores_warning(at_once: int, threads: int, host_cores: int) -> Optional[str]:
    """Runs that together want more threads than the host has share its cores: slower, the same
    numbers (each stage computes with compute.threads threads). `at_once` counts the runs really
    running beside each other, not a bound such as max_parallel: a one-run sweep shares nothing."""
    if at_once * threads <= host_cores:
        return None
    return (f"{at_once} runs at once on this host x compute.threads {threads} > {host_cores} cores: they share the "
            "cores (slower, the same numbers)")


def stage_env(parent_run_id: Optional[str], tracking_uri: Optional[str] = None) -> dict[str, str]:
    """The environment DVC and the stage processes run with: this checkout's venv first (stages
    find its python through $MEGL_PYTHON, a worktree has no .venv), the MLflow store and the
    sweep's parent run. No thread settings: each stage computes with params compute.threads threads."""
    env = {k: v for k, v in os.environ.items() if k not in (tracking.PARENT_RUN_ENV, "DVC_ROOT", "DVC_STAGE")}
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        MEGL_PYTHON=sys.executable,
        TOKENIZERS_PARALLELISM="false", DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", PYTHONUNBUFFERED="1",
    )
    env.pop("PYTHONPATH", None)  # the worktree's src/, through stages/python.sh
    env["MLFLOW_TRACKING_URI"] = os.environ.get("MLFLOW_TRACKING_URI") or tracking_uri or tracking.tracking_uri(REPO)
    if parent_run_id:
        env[tracking.PARENT_RUN_ENV] = parent_run_id
    return env


# --- the cell: one (dataset, backbone, variant, seed), on a worker --------------------------------------


@flow(name="megl-cell", flow_run_name="{dataset}/{backbone}/{variant}/s{seed}", log_prints=True)
def megl_cell(
    commit: str,
    params_yaml: str,
    dataset: str,
    backbone: str,
    variant: str,
    seed: int,
    mlflow_tracking_uri: Optional[str] = None,
    mlflow_parent_run_id: Optional[str] = None,
) -> dict:
    """One run of a sweep through DVC in a scratch worktree at `commit`: `dvc repro --pull` of its
    train and evaluate stages, then `dvc push --run-cache`. Refused by a clone at another commit."""
    here = scratch.head_commit()
    if here != commit:
        raise CellRefused(f"this worker's clone ({REPO}, {socket.gethostname()}) is at commit {here[:12]}, the sweep at "
                          f"{commit[:12]}: a worker runs only its own commit (check it out and restart the worker)")
    logger = get_run_logger()
    key = RunKey(dataset, backbone, variant, int(seed))
    grid = {"datasets": [dataset], "backbones": [backbone], "variants": [variant], "seeds": [int(seed)]}
    env = stage_env(mlflow_parent_run_id, mlflow_tracking_uri)
    env[tracking.CELL_ENV] = str(runtime.flow_run.id)
    dvc = scratch.dvc_command()
    started = time.monotonic()
    with scratch.worktree(commit, scratch.narrowed_params(params_yaml, grid)) as tree:
        # the runs beside this one are the cells (and gathers) in this clone's worktrees right now
        threads = int(yaml.safe_load(params_yaml).get("compute", {}).get("threads", 1))
        warning = shared_cores_warning(scratch.running_worktrees(), threads, cores())
        if warning:
            logger.warning(warning)
        out = scratch.run_logged([dvc, "repro", "--pull", key.stage("train"), key.stage("evaluate")], tree, env,
                                 logger.info, "dvc repro")
        scratch.run_logged([sys.executable, str(REPO / "pipeline" / "dvc_push.py"), "--with-deps", key.stage("evaluate")],
                           tree, env, logger.info, "dvc push")
        test = (tree / "metrics" / key.parts / "test.json").read_bytes()
    _check_not_superseded(env, params_yaml)
    restored = f"Stage '{key.stage('train')}' is cached" in out
    return {"run": key.name, "commit": commit, "host": socket.gethostname(), "clone": str(REPO),
            "test_json_sha256": hashlib.sha256(test).hexdigest(), "restored_from_run_cache": restored,
            "seconds": round(time.monotonic() - started, 1)}


def _check_not_superseded(env: dict[str, str], params_yaml: str) -> None:
    """A sweep publishes each cell once. If this flow run is no longer Running (the zombie automation
    marked it Crashed and the sweep submitted the cell again), its MLflow runs are deleted; what it
    pushed to DVC is content-addressed, the same bytes the other attempt pushes."""
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(runtime.flow_run.id).state
    if state is None or state.is_running():
        return
    import yaml

    tracked = yaml.safe_load(params_yaml).get("tracking", {})
    dropped = []
    if tracked.get("enabled"):
        os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
        dropped = tracking.drop_cell_runs(REPO, tracked.get("experiment", "megl"), str(runtime.flow_run.id))
    raise CellSuperseded(f"this attempt was given up by its sweep ({state.name}) before it finished; another attempt "
                         f"of the cell publishes it (its MLflow runs {dropped} deleted)")


# --- the sweep: submit the cells, wait, gather -------------------------------------------------------------


def _state_text(client, flow_run) -> str:
    """A finished cell's state message, or the tail of its logs when the message is empty."""
    message = (flow_run.state.message or "").strip()
    if message:
        return message
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])), limit=200)
    return "\n".join(log.message for log in logs[-25:]) or flow_run.state.name


def _queue_polled_since(client, queue: str, since: float) -> bool:
    try:
        found = client.read_work_queue_by_name(queue, work_pool_name=POOL)
    except Exception:  # the queue does not exist yet: no worker ever started for this commit
        return False
    return found.last_polled is not None and found.last_polled.timestamp() >= since


def run_cells(cells: list[RunKey], commit: str, params_text: str, max_parallel: int, retries: int,
              tracking_uri: Optional[str], parent: Optional[str], logger) -> tuple[dict[str, str], dict[str, str]]:
    """Submit every cell to the commit's work queue (at most max_parallel in flight) and wait for all.
    A failed cell is submitted again up to `retries` times; a crashed one (its worker died) up to
    MAX_CRASHES times more, to whichever worker polls first. Returns (finished: run name -> the
    flow run the sweep takes, failed: run name -> reason), in the grid's order."""
    queue = queue_name(commit)
    pending = list(cells)
    failures: dict[RunKey, int] = {}
    crashes: dict[RunKey, int] = {}
    in_flight: dict = {}  # flow run id -> (cell, submitted at)
    finished, failed = {}, {}
    with get_client(sync_client=True) as client:
        while pending or in_flight:
            while pending and len(in_flight) < max_parallel:
                key = pending.pop(0)
                flow_run = run_deployment(
                    CELL_DEPLOYMENT, timeout=0, work_queue_name=queue, flow_run_name=key.name,
                    parameters={"commit": commit, "params_yaml": params_text, "dataset": key.dataset,
                                "backbone": key.backbone, "variant": key.variant, "seed": key.seed,
                                "mlflow_tracking_uri": tracking_uri, "mlflow_parent_run_id": parent},
                    tags=["megl", queue],
                )
                in_flight[flow_run.id] = (key, time.time())
                logger.info("%s: submitted to %s/%s, flow run %s", key.name, POOL, queue, flow_run.id)
            time.sleep(2)
            for run_id, (key, submitted) in list(in_flight.items()):
                flow_run = client.read_flow_run(run_id)
                state = flow_run.state.type.value
                if state not in TERMINAL:
                    if state in ("SCHEDULED", "PENDING") and time.time() - submitted > NO_WORKER_S \
                            and not _queue_polled_since(client, queue, submitted):
                        raise NoWorker(f"no worker polls work queue {queue!r} of pool {POOL!r}: start one at commit "
                                       f"{commit[:12]} (`make prefect-worker`, docs/sweeps.md \"Running on several machines\")")
                    continue
                del in_flight[run_id]
                if state == "COMPLETED":
                    finished[key.name] = str(run_id)
                    logger.info("%s: finished (flow run %s)", key.name, run_id)
                    continue
                reason = f"{flow_run.state.name}: {_state_text(client, flow_run)}"
                counter, bound = (crashes, MAX_CRASHES) if state == "CRASHED" else (failures, retries)
                counter[key] = counter.get(key, 0) + 1
                if state != "CANCELLED" and counter[key] <= bound:
                    logger.info("%s: %s; submitting it again", key.name, reason.splitlines()[0])
                    pending.append(key)
                else:
                    failed[key.name] = reason
                    logger.info("%s: FAILED\n%s", key.name, reason)
    order = [k.name for k in cells]
    return ({k: finished[k] for k in order if k in finished}, {k: failed[k] for k in order if k in failed})


def gather(grid: GridConfig, finished: list[RunKey], commit: str, params_text: str, out: Path, env: dict[str, str],
           logger) -> list[str]:
    """The sweep's tables from DVC alone: a worktree with the sweep's grid, `dvc repro --pull` of the
    finished cells' evaluate stages (each restored from the run-cache: the cells pushed them), then
    stages/tables.py over them into `out`/tables, beside the sweep's params.yaml. Returns the train /
    evaluate stages DVC had to run instead of restoring (none when every cell pushed)."""
    sweep_grid = {"datasets": list(grid.datasets), "backbones": list(grid.backbones), "variants": list(grid.variants),
                  "seeds": list(grid.seeds)}
    params = scratch.narrowed_params(params_text, sweep_grid)
    tmp = out.with_name(out.name + ".incoming")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with scratch.worktree(commit, params) as tree:
        text = scratch.run_logged([scratch.dvc_command(), "repro", "--pull", *(k.stage("evaluate") for k in finished)],
                                  tree, env, logger.info, "gather")
        cmd = ["sh", "stages/python.sh", "stages/tables.py", "--out", str(tmp / "tables")]
        for flag, values in sweep_grid.items():
            cmd += [f"--{flag}", *map(str, values)]
        scratch.run_logged(cmd, tree, env, logger.info, "tables")
    (tmp / "params.yaml").write_text(scratch.with_grid(params_text, sweep_grid))  # comments kept, all datasets
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return re.findall(r"Running stage '((?:train|evaluate)@[^']+)'", text)


def _summary_text(summary: dict) -> str:
    lines = [f"sweep {summary['flow_run']} at commit {summary['commit'][:12]}: "
             f"{len(summary['finished'])} of {summary['runs_total']} runs finished"]
    lines += [f"  finished: {name}" for name in summary["finished"]]
    for name, error in summary["failed"].items():
        lines.append(f"  FAILED: {name}")
        lines += [f"    {line}" for line in error.splitlines()[-10:]]
    if summary.get("recomputed_by_gather"):
        lines.append(f"  recomputed by the gather (not in the run-cache): {', '.join(summary['recomputed_by_gather'])}")
    if summary["tables"]:
        lines.append(f"  tables: {summary['tables']}/tables")
        lines.append(f"  into this workspace, from DVC's cache: cp {summary['tables']}/params.yaml params.yaml && dvc repro --pull")
    else:
        lines.append(f"  tables: not built: {summary.get('tables_error', '')}")
    return "\n".join(lines)


@flow(name="megl", log_prints=True)
def megl_sweep(
    datasets: Optional[list[DatasetName]] = None,
    backbones: Optional[list[BackboneName]] = None,
    variants: Optional[list[VariantName]] = None,
    seeds: Optional[list[int]] = None,
    max_parallel: Optional[int] = None,
):
    """The ablation sweep: every (dataset, backbone, variant, seed) as a flow run of megl-cell/pool
    on the work pool, then the tables. None takes params.yaml (`grid`, `sweep.max_parallel`).

    Args:
        datasets: Datasets to sweep, from params.yaml's datasets block. None: params grid.datasets.
        backbones: Backbones to sweep, from params.yaml's backbones block. None: params grid.backbones.
        variants: Variants (methods and ablations) to sweep, from params.yaml's variants block. None: params
            grid.variants.
        seeds: Training seeds; each (dataset, backbone, variant) is trained once per seed. None: params grid.seeds.
        max_parallel: Runs in flight at once, on any workers of the pool (their slots bound it too). None: params
            sweep.max_parallel.
    """
    logger = get_run_logger()
    params = load_params(PARAMS)
    grid = params.select_grid(datasets, backbones, variants, seeds)  # ConfigError naming what is wrong
    max_parallel = params.sweep.max_parallel if max_parallel is None else int(max_parallel)
    if max_parallel < 1:
        raise ConfigError(f"max_parallel must be >= 1, got {max_parallel}")
    changed = scratch.uncommitted_code(REPO)
    if changed:
        raise ConfigError(f"{REPO} has code changes that are not committed ({', '.join(changed[:8])}): the workers run "
                          "the commit, so commit them (or stash them) and run the sweep again")
    commit = scratch.head_commit(REPO)
    params_text = PARAMS.read_text()
    cells = grid_runs(grid.datasets, grid.backbones, grid.variants, grid.seeds)
    sweep = {"datasets": list(grid.datasets), "backbones": list(grid.backbones), "variants": list(grid.variants),
             "seeds": list(grid.seeds), "max_parallel": max_parallel, "retries": params.sweep.retries, "commit": commit}
    run_label = runtime.flow_run.name or "local"
    out = REPO / "results" / "sweeps" / f"{run_label}-{str(runtime.flow_run.id or '')[:8]}".rstrip("-")
    logger.info("sweep of %d runs at commit %s, at most %d at once on pool %r, queue %r: %s", len(cells), commit[:12],
                min(max_parallel, len(cells)), POOL, queue_name(commit), sweep)

    parent = uri = None
    if params.tracking.enabled:
        uri = tracking.tracking_uri(params.root)
        tags = {f"sweep.{k}": ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in sweep.items()}
        tags |= {"kind": "sweep", "prefect.flow_run_id": str(runtime.flow_run.id), "prefect.flow_run_name": run_label,
                 "prefect.deployment": str(runtime.deployment.name or ""), "mlflow.source.git.commit": commit}
        parent = tracking.start_sweep(params.root, params.tracking.experiment, f"sweep {run_label}", tags, sweep)
        logger.info("MLflow parent run %s in experiment %r (%s)", parent, params.tracking.experiment, uri)

    started = time.monotonic()
    summary = {"flow_run": run_label, "commit": commit, "runs_total": len(cells), "finished": [], "failed": {},
               "tables": None}
    try:
        accepted, failed = run_cells(cells, commit, params_text, max_parallel, params.sweep.retries, uri, parent, logger)
        summary |= {"finished": list(accepted), "failed": failed, "cell_flow_runs": accepted}
        if accepted:
            done = [key for key in cells if key.name in accepted]
            summary["recomputed_by_gather"] = gather(grid, done, commit, params_text, out, stage_env(None, uri), logger)
            summary["tables"] = str(out.relative_to(REPO))
            if parent is not None:  # each run once: another attempt's runs (a crashed cell that finished) go
                summary["mlflow_runs_dropped"] = tracking.drop_superseded(params.root, parent, accepted)
        else:
            summary["tables_error"] = "no run finished"
    except BaseException as exc:
        summary["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        ok = not summary["failed"] and summary["tables"] is not None and "error" not in summary
        if parent is not None:
            tracking.finish_sweep(
                params.root, parent, ok,
                {"runs_total": len(cells), "runs_finished": len(summary["finished"]), "runs_failed": len(summary["failed"]),
                 "duration_s": time.monotonic() - started},
                summary, {"tables": out / "tables"} if summary["tables"] else {},
            )
        try:
            sweep_artifacts.publish(summary, [key.name for key in cells], out / "tables" if summary["tables"] else None,
                                    params.tracking.experiment if parent else None, parent)
        except Exception as exc:  # the UI's copy of the summary: its loss must not hide the sweep's outcome
            logger.warning("the sweep's Prefect artifacts were not published: %s: %s", type(exc).__name__, exc)
    text = _summary_text(summary)
    logger.info(text)
    if not ok:
        return Failed(message=text)  # the summary is in MLflow (summary.json) and in this message
    return summary


@flow(name="megl-study", log_prints=True)
def megl_study(study: str = "configs/study.yaml", max_runs: Optional[int] = None, max_parallel: Optional[int] = None):
    """The fair comparison (pipeline/study.py, docs/study.md) with every run a flow run of
    megl-cell/pool on the work pool, at most max_parallel at once (None: params sweep.max_parallel);
    the records, the selection and the report as `make study` writes them, in this checkout.

    Args:
        study: The study file, relative to the repository (configs/study.yaml: the fair comparison; a file
            with hyperparameters_from: an ablation at another study's selection).
        max_runs: Runs this flow run submits at most; the study resumes from its records next time. None: all.
        max_parallel: Runs in flight at once, on any workers of the pool. None: params sweep.max_parallel.
    """
    import study as study_command

    logger = get_run_logger()
    params = load_params(PARAMS)
    parallel = params.sweep.max_parallel if max_parallel is None else int(max_parallel)
    commit = scratch.head_commit(REPO)

    def submit(keys: list[RunKey], params_text: str, env: dict[str, str]) -> dict[str, str]:
        _, failed = run_cells(keys, commit, params_text, parallel, params.sweep.retries, env.get("MLFLOW_TRACKING_URI"),
                              env.get(tracking.PARENT_RUN_ENV), logger)
        return failed

    argv = [study] + (["--max-runs", str(int(max_runs))] if max_runs is not None else [])
    code = study_command.main(argv, submit=submit, log=logger.info)
    report = REPO / "studies" / study_command.read_overlay(Path(study))["study"]["name"] / "report.md"
    if report.is_file():  # the study's report in the UI's Artifacts tab, as it stands after this call
        create_markdown_artifact(markdown=report.read_text(), key="megl-study-report",
                                 description=f"the study's report ({report.relative_to(REPO)})")
    return code


if __name__ == "__main__":  # a one-off local run without a deployment: python pipeline/flows.py
    megl_sweep()
