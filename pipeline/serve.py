"""Serve the project's sweep and study and register their work pool (make prefect-serve):

    . pipeline/env.sh && python pipeline/serve.py [--local-workers N]

- `megl/ablation` (pipeline/flows.py, the sweep) and `megl-study/fair` (the fair comparison,
  pipeline/study.py) are served by this process, one flow run at a time.
- The work pool `megl` (process type) and its deployment `megl-cell/pool` are created or updated:
  each cell of a sweep is a flow run of it, run by a worker on any host (`make prefect-worker`, or
  `. pipeline/env.sh && prefect worker start --pool megl --work-queue commit-<sha>` in a clone). The
  deployment's pull step enters $MEGL_ROOT, the worker's clone (pipeline/env.sh sets it).
- The automation `megl: crash zombie flow runs`: a flow run whose heartbeats stop (its worker host
  died, or was SIGKILLed) is marked Crashed, and the sweep submits its cell again.
- `--local-slots N` (default 1): a worker in this clone that runs up to N cells at once, started and
  stopped with this process, so one machine needs no other command; 0 when workers run elsewhere.

Without pipeline/env.sh, Prefect's state still defaults to <repo>/.prefect and the API to
http://127.0.0.1:4200/api (a server started by `make prefect-server`), never ~/.prefect or Prefect Cloud.
SIGINT or SIGTERM stops serving and the local workers.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
POOL = "megl"
ZOMBIE_AUTOMATION = "megl: crash zombie flow runs"
HEARTBEAT_S = 30  # PREFECT_FLOWS_HEARTBEAT_FREQUENCY of the workers' flow runs (Prefect's minimum)
ZOMBIE_AFTER_S = 90  # no heartbeat for this long: Crashed


def _defaults() -> None:
    """Loopback server, state inside the repository, no analytics: set before prefect is imported."""
    os.environ.setdefault("PREFECT_HOME", str(REPO / ".prefect"))
    os.environ.setdefault("PREFECT_API_URL", f"http://127.0.0.1:{os.environ.get('MEGL_PREFECT_PORT', '4200')}/api")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", str(HEARTBEAT_S))
    os.environ.setdefault("PREFECT_WORKER_QUERY_SECONDS", "5")
    os.environ.setdefault("MEGL_ROOT", str(REPO))
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def _flows():
    if str(REPO / "pipeline") not in sys.path:
        sys.path.insert(0, str(REPO / "pipeline"))
    import flows

    return flows


def deployments() -> list:
    """The deployments this process serves (the sweep and the study; their cells run on the work pool)."""
    flows = _flows()
    return [
        flows.megl_sweep.to_deployment(
            "ablation",
            description="Ablation sweep: datasets x backbones x variants x seeds (None = params.yaml grid), each run a "
            f"flow run of {flows.CELL_DEPLOYMENT} on the work pool {POOL!r} (at most max_parallel at once); tables "
            "and an MLflow parent run at the end.",
            tags=["megl"],
        ),
        flows.megl_study.to_deployment(
            "fair",
            description="The fair comparison (docs/study.md, configs/study.yaml): every method's seeded random search, "
            f"the declared selection on validation, the final seeds; each run a flow run of {flows.CELL_DEPLOYMENT} on "
            f"the work pool {POOL!r}. Resumes from studies/<name>/runs.jsonl; max_runs bounds one flow run.",
            tags=["megl"],
        ),
    ]


def cell_deployment_spec() -> dict:
    """What `megl-cell/pool` is: the cell flow, on the pool, run in the worker's own clone."""
    from prefect.utilities.callables import parameter_schema

    flows = _flows()
    return {
        "name": "pool",
        "entrypoint": "pipeline/flows.py:megl_cell",
        "work_pool_name": POOL,
        # resolved on the worker, from its environment: every host runs the cell in its own clone
        "pull_steps": [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $MEGL_ROOT }}"}}],
        "parameter_openapi_schema": parameter_schema(flows.megl_cell).model_dump(exclude_unset=True),
        "enforce_parameter_schema": True,
        "description": "One run of a sweep (submitted by megl/ablation): dvc repro --pull of its train and evaluate "
        "stages in a worktree of the worker's clone at the sweep's commit, then dvc push --run-cache.",
        "tags": ["megl"],
    }


def register_pool() -> None:
    """The process work pool, the cell deployment on it, and the zombie automation (idempotent)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    spec = cell_deployment_spec()
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(POOL)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=POOL, type="process", base_job_template=ProcessWorker.get_default_base_job_template(),
                description="megl sweep cells: one worker per clone (make prefect-worker), on any host"))
        flow_id = client.create_flow_from_name("megl-cell")
        client.create_deployment(flow_id=flow_id, **spec)
    register_zombie_automation()


def register_zombie_automation() -> None:
    """Prefect's recipe for zombie flow runs ("Detect zombie flows"): heartbeats stop -> Crashed."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        Automation.read(name=ZOMBIE_AUTOMATION)
        return
    except ValueError:  # not there yet
        pass
    Automation(
        name=ZOMBIE_AUTOMATION,
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=ZOMBIE_AFTER_S),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {ZOMBIE_AFTER_S} s: its worker is gone")],
    ).create()


def worker_command(limit: int = 1) -> list[str]:
    """`prefect worker start` for this clone: the pool, this commit's queue (pipeline/flows.py)."""
    flows = _flows()
    import scratch

    prefect = Path(sys.executable).with_name("prefect")
    return [str(prefect) if prefect.is_file() else "prefect", "worker", "start", "--pool", POOL, "--type", "process",
            "--work-queue", flows.queue_name(scratch.head_commit(REPO)), "--limit", str(limit)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local-slots", type=int, default=int(os.environ.get("MEGL_LOCAL_SLOTS", "1")),
                        help="cells a worker in this clone runs at once (default 1; 0: no local worker)")
    args = parser.parse_args()
    _defaults()
    from prefect import serve

    os.chdir(REPO)  # deployment entrypoints are relative to the repository
    register_pool()
    workers = [subprocess.Popen(worker_command(args.local_slots), cwd=REPO, start_new_session=True)] if args.local_slots else []

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        serve(*deployments(), limit=1)
    except KeyboardInterrupt:
        pass
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
