"""Prefect flows of the project. Served by `pipeline/serve.py`; see pipeline/README.md.

Flow `megl` (deployment `megl/ablation`): the ablation sweep over datasets x backbones x variants x
seeds (None = params.yaml `grid`), at most `max_parallel` runs at once (None = params `sweep`).

1. Data: `dvc repro saliency@<dataset> ...` for the sweep's datasets. DVC, not the data stage
   scripts, because DVC knows whether synthesize / extract / saliency are up to date: an unchanged
   dataset costs a second, a changed params block rebuilds exactly that dataset, and dvc.lock
   stays true to what is on disk. Needs the repository to be a DVC repository (a clone is).
2. One task per run: `python stages/train.py ...` then `python stages/evaluate.py ...`, the very
   commands dvc.yaml runs, in their own processes (parallel runs cannot share a torch or MLflow
   state; a crash stays in its task). Each process computes with params compute.threads threads,
   as under DVC, so a run's numbers do not depend on max_parallel (more threads than cores in
   all only runs slower).
   A failed run is retried (params `sweep.retries`, `sweep.retry_delay_s`), then fails its task
   only: the other runs go on.
3. Tables: `python stages/tables.py` restricted to the sweep's runs, from whatever finished,
   written to results/sweeps/<flow run>/tables/ (tables/ stays what `dvc repro` made).
4. The summary (finished runs, failed runs with the tail of their output, the tables folder) is
   logged and returned. The flow run ends Completed when every run finished, Failed (with the
   summary as its message) when any failed.

MLflow (when params `tracking.enabled`): one parent run per sweep (`sweep <flow run name>`, in the
project's experiment), tagged with the sweep's parameters and the Prefect flow run; its id reaches
the stage processes as $MEGL_MLFLOW_PARENT_RUN_ID, so each run's MLflow run is its child. The
parent ends FINISHED or FAILED with runs_finished / runs_failed, summary.json and the tables.

This module calls the stages; from the library it reads only params.yaml (megl.config), names runs
with megl.layout and opens the parent run through megl.tracking (the project's only MLflow user).
"""

import collections
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:  # this checkout's library, also when run from a copy of it
    sys.path.insert(0, str(REPO / "src"))

from prefect import flow, get_run_logger, runtime, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.futures import as_completed  # noqa: E402
from prefect.states import Failed  # noqa: E402
from prefect.task_runners import ThreadPoolTaskRunner  # noqa: E402

from megl import tracking  # noqa: E402
from megl.config import ConfigError, GridConfig, load_params  # noqa: E402
from megl.layout import RunKey, grid_runs  # noqa: E402

PARAMS = REPO / "params.yaml"
TAIL_LINES = 25  # of a failed stage's output, in the task's error and the summary


class StageFailed(RuntimeError):
    """A stage process exited non-zero; the message ends with the tail of its output."""


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def stage_env(parent_run_id: Optional[str]) -> dict[str, str]:
    """The environment of every stage process: this checkout's library and virtualenv first and
    the sweep's MLflow parent run. No thread settings: each stage computes with params
    compute.threads threads, as it does under DVC."""
    env = {k: v for k, v in os.environ.items() if k != tracking.PARENT_RUN_ENV}
    env.update(
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONPATH=os.pathsep.join(p for p in [str(REPO / "src"), env.get("PYTHONPATH", "")] if p),
        TOKENIZERS_PARALLELISM="false", DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true",
        PYTHONUNBUFFERED="1",
    )
    if parent_run_id:
        env[tracking.PARENT_RUN_ENV] = parent_run_id
    return env


def run_command(cmd: list[str], env: dict[str, str], what: str) -> None:
    """Run one command in the repository, its output streamed into the Prefect log; raise
    StageFailed with the output's tail when it fails."""
    logger = get_run_logger()
    logger.info("%s: %s", what, " ".join(cmd))
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    with subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            logger.info("%s | %s", what, line)
    if proc.returncode != 0:
        raise StageFailed(f"{what} exited with {proc.returncode}:\n" + "\n".join(tail))


@task(name="data", task_run_name="data", cache_policy=NO_CACHE)
def prepare_data(datasets: list[str], env: dict[str, str]) -> None:
    """synthesize -> extract -> saliency for the sweep's datasets, through DVC (up-to-date = no-op)."""
    if not (REPO / ".dvc").is_dir():
        raise StageFailed(f"{REPO} is not a DVC repository (no .dvc/): run `dvc init` there, or clone the project")
    dvc = Path(sys.executable).parent / "dvc"
    run_command([str(dvc) if dvc.exists() else "dvc", "repro", *(f"saliency@{d}" for d in datasets)], env, "dvc repro")


@task(name="run", task_run_name="{dataset}/{backbone}/{variant}/s{seed}", cache_policy=NO_CACHE)
def train_and_evaluate(dataset: str, backbone: str, variant: str, seed: int, env: dict[str, str]) -> str:
    """One run of the grid: the train stage, then the evaluate stage (the commands dvc.yaml runs)."""
    args = ["--params", str(PARAMS), "--dataset", dataset, "--backbone", backbone, "--variant", variant, "--seed", str(seed)]
    for stage in ("train", "evaluate"):
        run_command([sys.executable, str(REPO / "stages" / f"{stage}.py"), *args], env, stage)
    return RunKey(dataset, backbone, variant, seed).name


@task(name="tables", task_run_name="tables", cache_policy=NO_CACHE)
def regenerate_tables(grid: GridConfig, out: Path, env: dict[str, str]) -> str:
    """The paper's tables from the sweep's runs that have test metrics (stages/tables.py)."""
    cmd = [sys.executable, str(REPO / "stages" / "tables.py"), "--params", str(PARAMS), "--out", str(out)]
    for flag, values in (("--datasets", grid.datasets), ("--backbones", grid.backbones),
                         ("--variants", grid.variants), ("--seeds", grid.seeds)):
        cmd += [flag, *map(str, sorted(values))]
    run_command(cmd, env, "tables")
    return str(out)


def _error_text(state) -> str:
    try:
        exc = state.result(raise_on_failure=False)
    except Exception as read_error:  # the result may not be retrievable; the state message is
        return state.message or repr(read_error)
    return str(exc) if isinstance(exc, BaseException) else (state.message or state.name)


def _summary_text(summary: dict) -> str:
    lines = [f"sweep {summary['flow_run']}: {len(summary['finished'])} of {summary['runs_total']} runs finished"]
    lines += [f"  finished: {name}" for name in summary["finished"]]
    for name, error in summary["failed"].items():
        lines.append(f"  FAILED: {name}")
        lines += [f"    {line}" for line in error.splitlines()[-10:]]
    lines.append(f"  tables: {summary['tables'] or 'not built: ' + summary.get('tables_error', '')}")
    return "\n".join(lines)


@flow(name="megl", task_runner=ThreadPoolTaskRunner(max_workers=64), log_prints=True)
def megl_sweep(
    datasets: Optional[list[str]] = None,
    backbones: Optional[list[str]] = None,
    variants: Optional[list[str]] = None,
    seeds: Optional[list[int]] = None,
    max_parallel: Optional[int] = None,
):
    """The ablation sweep: every (dataset, backbone, variant, seed) trained and evaluated by the
    stage scripts, then the tables. None takes params.yaml (`grid`, `sweep.max_parallel`)."""
    logger = get_run_logger()
    params = load_params(PARAMS)
    grid = params.select_grid(datasets, backbones, variants, seeds)  # ConfigError naming what is wrong
    max_parallel = params.sweep.max_parallel if max_parallel is None else int(max_parallel)
    if max_parallel < 1:
        raise ConfigError(f"max_parallel must be >= 1, got {max_parallel}")
    cells = grid_runs(grid.datasets, grid.backbones, grid.variants, grid.seeds)
    sweep = {"datasets": list(grid.datasets), "backbones": list(grid.backbones), "variants": list(grid.variants),
             "seeds": list(grid.seeds),
             "max_parallel": max_parallel, "retries": params.sweep.retries, "retry_delay_s": params.sweep.retry_delay_s}
    run_label = runtime.flow_run.name or "local"
    out = REPO / "results" / "sweeps" / f"{run_label}-{str(runtime.flow_run.id or '')[:8]}".rstrip("-") / "tables"
    logger.info("sweep of %d runs, at most %d at once, %d retries: %s", len(cells), max_parallel, params.sweep.retries, sweep)
    if max_parallel * params.compute.threads > _cores():
        logger.info("%d runs x compute.threads %d > %d cores: runs share cores (slower, same numbers)",
                    max_parallel, params.compute.threads, _cores())

    parent = None
    if params.tracking.enabled:
        tags = {f"sweep.{k}": ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in sweep.items()}
        tags |= {"kind": "sweep", "prefect.flow_run_id": str(runtime.flow_run.id), "prefect.flow_run_name": run_label,
                 "prefect.deployment": str(runtime.deployment.name or "")}
        parent = tracking.start_sweep(params.root, params.tracking.experiment, f"sweep {run_label}", tags, sweep)
        logger.info("MLflow parent run %s in experiment %r", parent, params.tracking.experiment)

    started = time.monotonic()
    summary = {"flow_run": run_label, "runs_total": len(cells), "finished": [], "failed": {}, "tables": None}
    try:
        env = stage_env(parent)
        data = prepare_data.with_options(retries=params.sweep.retries, retry_delay_seconds=params.sweep.retry_delay_s)(
            list(grid.datasets), env, return_state=True
        )
        if not data.is_completed():
            error = _error_text(data)
            summary["failed"] = {key.name: f"data not prepared: {error}" for key in cells}
            summary["tables_error"] = "no runs (data stages failed)"
        else:
            run = train_and_evaluate.with_options(retries=params.sweep.retries, retry_delay_seconds=params.sweep.retry_delay_s)
            futures, pending, running = {}, list(cells), []
            while pending or running:  # a sliding window of max_parallel runs
                while pending and len(running) < max_parallel:
                    key = pending.pop(0)
                    futures[key] = run.submit(key.dataset, key.backbone, key.variant, key.seed, env)
                    running.append(futures[key])
                running.remove(next(as_completed(running)))
            for key, future in futures.items():
                future.wait()  # the run's final state as the engine returned it (the API's may lag)
                state = future.state
                if state.is_completed():
                    summary["finished"].append(key.name)
                else:
                    summary["failed"][key.name] = _error_text(state)
            if summary["finished"]:
                tables = regenerate_tables(grid, out, env, return_state=True)
                if tables.is_completed():
                    summary["tables"] = str(out.relative_to(REPO))
                else:
                    summary["tables_error"] = _error_text(tables)
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
                summary, {"tables": out} if summary["tables"] else {},
            )
    text = _summary_text(summary)
    logger.info(text)
    if not ok:
        return Failed(message=text)  # the summary is in MLflow (summary.json) and in this message
    return summary


if __name__ == "__main__":  # a one-off local run without a deployment: python pipeline/flows.py
    megl_sweep()
