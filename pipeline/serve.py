"""Serve the project's sweep and study and register their work pool (make prefect-serve):

    . pipeline/env.sh && python pipeline/serve.py [--local-slots N]

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
An API that does not answer at start: a message and exit 1, nothing registered.

SIGINT or SIGTERM stops it in every phase (checking the API, registering, serving) within seconds:
the local worker and the flow runs served here get SIGTERM, then SIGKILL after a few seconds. Exit 0
when stopped while serving, 1 when the API did not answer the stop (it did not hear of the flow runs
killed here), 128 + the signal when stopped before serving began. A second signal stops it at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import NoReturn, Optional

REPO = Path(__file__).resolve().parents[1]
POOL = "megl"
ZOMBIE_AUTOMATION = "megl: crash zombie flow runs"
HEARTBEAT_S = 30  # PREFECT_FLOWS_HEARTBEAT_FREQUENCY of the workers' flow runs (Prefect's minimum)
ZOMBIE_AFTER_S = 90  # no heartbeat for this long: Crashed
START_PROBE_S = 10  # the API must answer this soon at start (a server just started may be slow)
STOP_PROBE_S = 3  # at a stop: one request, no retries (Prefect's client retries a dead API for minutes)
STOP_GRACE_S = 5  # after SIGTERM, the worker and the flow runs have this long before SIGKILL
UNWIND_S = 10  # a stop whose unwinding (Prefect's runner) takes longer ends the process anyway


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


def say(message: str) -> None:
    print(f"pipeline/serve.py: {message}", file=sys.stderr, flush=True)


def api_problem(timeout: float) -> Optional[str]:
    """Why the Prefect API does not answer one health request within `timeout` s, or None when it does.
    No retries: Prefect's client retries a dead API for minutes, which is what kept a stop waiting."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    try:
        with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}):
            with get_client(httpx_settings={"timeout": timeout}, sync_client=True) as client:
                error = client.api_healthcheck()
    except Exception as exc:  # any failure to reach it is the answer
        error = exc
    if error is None:
        return None
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def api_down(problem: str) -> str:
    return f"the Prefect API at {os.environ.get('PREFECT_API_URL')} does not answer ({problem})"


def stop_descendants(grace: float) -> None:
    """SIGTERM to every process this one started (the local worker, its cells, the flow runs served
    here), SIGKILL to what is left after `grace` s: nothing outlives this process, also when the API
    is gone and nobody can cancel them through it."""
    import psutil  # installed with the pipeline's tools (accelerate, deepspeed depend on it)

    def kill(processes, how):
        for process in processes:
            try:
                getattr(process, how)()
            except psutil.NoSuchProcess:
                pass

    started = psutil.Process().children(recursive=True)
    kill(started, "terminate")
    _, alive = psutil.wait_procs(started, timeout=grace)
    kill(alive + psutil.Process().children(recursive=True), "kill")  # and what they started meanwhile


class Stopper:
    """SIGINT and SIGTERM, installed before anything talks to the API: the first signal raises
    KeyboardInterrupt in whatever runs (registration, Prefect's runner) and starts `stop` in a
    thread, which stops the processes this one started and ends the process if the unwinding hangs;
    a second signal ends it at once."""

    def __init__(self) -> None:
        self.phase = "starting"  # what the process was doing, for the messages
        self.signum: Optional[int] = None
        self.problem: Optional[str] = None  # why the API did not answer at the stop
        self.children_stopped = threading.Event()

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.on_signal)

    def on_signal(self, signum: int, frame=None) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            self.exit_now(f"{name} again: stopped at once")
        self.signum = signum
        say(f"{name} while {self.phase}: stopping")
        threading.Thread(target=self.stop, name="megl-stop", daemon=True).start()
        raise KeyboardInterrupt

    def stop(self) -> None:
        started = time.monotonic()
        # before "checking the API" prefect may be half imported in the main thread: no request then
        self.problem = api_problem(STOP_PROBE_S) if self.phase != "starting" else None
        stop_descendants(STOP_GRACE_S if self.problem is None else 1)
        if self.problem is not None:  # nothing left to wait for: no one can record the stop
            self.exit_now("stopped without it: the API did not hear of the flow runs killed here")
        self.children_stopped.set()
        time.sleep(max(0.0, UNWIND_S - (time.monotonic() - started)))
        self.exit_now(f"Prefect's runner did not stop within {UNWIND_S} s: stopped without it")

    def exit_now(self, why: str) -> NoReturn:
        say(f"{api_down(self.problem)}: {why}" if self.problem else why)
        stop_descendants(0)
        os._exit(1)

    def exit_code(self) -> int:
        """After the main thread unwound: 0 for a stop while serving, 128 + the signal before."""
        self.children_stopped.wait()  # stop() sets it or ends the process
        say("stopped")
        return 0 if self.phase == "serving" else 128 + self.signum


def serve_here(stopper: Stopper) -> None:
    """prefect.serve of deployments(), one flow run at a time, with SIGTERM left to `stopper`
    (Prefect's runner installs its own handler, which asked the API to pause the deployments,
    retrying for minutes when it is gone)."""
    import asyncio

    from prefect.runner import Runner

    class ServedHere(Runner):
        def handle_sigterm(self, signum=signal.SIGTERM, frame=None) -> None:
            stopper.on_signal(signum, frame)

    # nothing to pause: these deployments have no schedules, and pausing them is API calls on the way out
    runner = ServedHere(limit=1, pause_on_shutdown=False)
    for deployment in deployments():
        runner.add_deployment(deployment)
    stopper.phase = "serving"
    say(f"serving megl/ablation and megl-study/fair from {REPO} on {os.environ.get('PREFECT_API_URL')}; "
        "Ctrl-C stops")
    asyncio.run(runner.start())


def run(local_slots: int, stopper: Stopper) -> int:
    """Check the API, register the pool, start the local worker, serve until a signal."""
    stopper.phase = "checking the API"
    problem = api_problem(START_PROBE_S)
    if problem is not None:
        say(f"{api_down(problem)}: start it with `make prefect-server` (or, for a shared server, set "
            "MEGL_PREFECT_API_URL before `. pipeline/env.sh`)")
        return 1
    os.chdir(REPO)  # deployment entrypoints are relative to the repository
    stopper.phase = "registering the work pool"
    register_pool()
    if local_slots:
        stopper.phase = "starting the local worker"
        subprocess.Popen(worker_command(local_slots), cwd=REPO, start_new_session=True)
    stopper.phase = "registering the deployments"
    serve_here(stopper)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local-slots", type=int, default=int(os.environ.get("MEGL_LOCAL_SLOTS", "1")),
                        help="cells a worker in this clone runs at once (default 1; 0: no local worker)")
    args = parser.parse_args()
    _defaults()
    stopper = Stopper()
    stopper.install()
    try:
        code = run(args.local_slots, stopper)
    except KeyboardInterrupt:
        code = stopper.exit_code()
    finally:
        if stopper.signum is None:  # an error or a refusal, not a signal: nothing outlives this process
            stop_descendants(STOP_GRACE_S)
    sys.exit(code)


if __name__ == "__main__":
    main()
