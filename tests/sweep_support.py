"""A real Prefect sweep for the end-to-end tests (tests/test_prefect_flow.py, tests/test_mlflow_ui.py).

`ablation_sweep` (session scope, imported by conftest.py so both modules share one sweep): a copy
of the repository with tiny params, a Prefect server on loopback (state in a temporary
PREFECT_HOME), `python pipeline/serve.py` serving the project's deployments, and one
`prefect deployment run megl/ablation --watch` on a tiny grid (object_me x resnet18 x
{baseline, megl} x seed 0) tracked in a temporary SQLite MLflow store.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from tiny_params import grid_datasets_only

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
GRID = {"datasets": ["object_me"], "backbones": ["resnet18"], "variants": ["baseline", "megl"], "seeds": [0]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, body: dict | None = None, timeout: float = 10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read().decode())


def wait_for(what: str, probe, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None):
    """Poll probe() until it returns a truthy value; fail with the process log on timeout or exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            value = probe()
            if value:
                return value
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
    state = f"exited with {proc.returncode}" if proc is not None and proc.poll() is not None else f"not ready after {timeout} s"
    pytest.fail(f"{what} {state}\n{tail}")


def stop(proc: subprocess.Popen | None) -> None:
    """Terminate a process we started (its own process group: the server's workers too)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, 9)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def tiny_repo(work: Path) -> Path:
    """The parts of the repository a sweep needs, with tiny params, as a DVC repo (no git)."""
    work.mkdir(parents=True)
    for name in ("dvc.yaml", "stages", "src", "pipeline"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, work / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synthetic"]["object_me"].update(num_samples=240, num_classes=4, visual_fraction=0.3, map_size=24)
    params["train"].update(epochs=1, batch_size=16, eval_batch_size=32)
    params["evaluate"].update(faithfulness_samples=8, faithfulness_steps=4, efficiency_warmup=1, efficiency_iters=2,
                              gallery_samples=4)
    params["tracking"].update(enabled=True, gallery_samples=4)
    params["sweep"].update(max_parallel=2, retries=0, retry_delay_s=0)
    params["grid"]["datasets"] = GRID["datasets"]
    grid_datasets_only(params)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = subprocess.run([str(VENV_BIN / "dvc"), "init", "--no-scm", "-q"], cwd=work, capture_output=True, text=True,
                         env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert out.returncode == 0, out.stderr
    return work


@dataclasses.dataclass
class Sweep:
    work: Path  # the repository copy the sweep ran in
    env: dict[str, str]  # Prefect client + MLflow environment of the serve process and the CLI
    api: str  # Prefect API URL
    mlflow_uri: str
    flow_run_id: str
    cli_output: str
    seconds: float  # `prefect deployment run ... --watch`, wall clock

    def run_deployment(self, parameters: dict, timeout: float = 900) -> tuple[subprocess.CompletedProcess, str]:
        """`prefect deployment run megl/ablation --params JSON --watch`: (completed CLI, flow run id)."""
        out = subprocess.run(
            [str(VENV_BIN / "prefect"), "deployment", "run", "megl/ablation", "--params", json.dumps(parameters),
             "--watch", "--watch-timeout", str(int(timeout))],
            cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout + 60,
        )
        found = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout)
        assert found, out.stdout + out.stderr
        return out, found.group(1)

    def flow_run(self, run_id: str) -> dict:
        return http_json(f"{self.api}/flow_runs/{run_id}")

    def task_runs(self, run_id: str) -> list[dict]:
        return http_json(f"{self.api}/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200})


@pytest.fixture(scope="session")
def ablation_sweep(tmp_path_factory):
    base = tmp_path_factory.mktemp("sweep")
    work = tiny_repo(base / "repo")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    mlflow_uri = f"sqlite:///{base}/mlflow.db"
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "PREFECT_HOME": str(base / "prefect"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("MEGL_MLFLOW_PARENT_RUN_ID", None)
    server = serve = None
    server_log, serve_log = base / "prefect-server.log", base / "serve.log"
    try:
        with open(server_log, "w") as log:
            server = subprocess.Popen(
                [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                cwd=base, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_for("prefect server", lambda: http_json(f"{api}/health") is True, 180, server, server_log)
        with open(serve_log, "w") as log:
            serve = subprocess.Popen([sys.executable, "pipeline/serve.py"], cwd=work, env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_for("pipeline/serve.py", lambda: http_json(f"{api}/deployments/name/megl/ablation")["name"] == "ablation",
                 180, serve, serve_log)
        sweep = Sweep(work, env, api, mlflow_uri, "", "", 0.0)
        started = time.monotonic()
        out, run_id = sweep.run_deployment({**GRID, "max_parallel": 2})
        sweep.seconds = time.monotonic() - started
        sweep.flow_run_id, sweep.cli_output = run_id, out.stdout + out.stderr
        assert out.returncode == 0, sweep.cli_output[-6000:] + "\n--- serve.log\n" + serve_log.read_text()[-6000:]
        yield sweep
    finally:
        stop(serve)
        stop(server)
