"""A real Prefect sweep for the end-to-end tests (tests/test_prefect_flow.py, tests/test_mlflow_ui.py,
tests/test_nothing_lost.py).

`prefect_server` (session scope): one Prefect server on loopback (state in a temporary PREFECT_HOME)
for every test that needs one (tests/test_prefect_server.py, the sweep below).

`ablation_sweep` (session scope, imported by conftest.py so the modules share one sweep): a git + DVC
copy of the repository with tiny params, where `dvc repro` made the workspace's results (grid
object_me x resnet18 x {baseline, megl} x seed 0) and git committed them, as a user's checkout looks;
the `prefect_server`; `python pipeline/serve.py` serving
the sweep with a worker of the pool in the same clone (2 cells at once); and one
`prefect deployment run megl/ablation --watch` on seed 1 of the same grid (cells the workspace has
not run), tracked in a temporary SQLite MLflow store.
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
from tiny_params import grid_datasets_only, one_train_block

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
GRID = {"datasets": ["object_me"], "backbones": ["resnet18"], "variants": ["baseline", "megl"], "seeds": [0]}
SWEEP = {**GRID, "seeds": [1]}  # what the sweep runs: not yet in the workspace
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}


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


def descendants(proc: subprocess.Popen) -> list:
    import psutil

    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def stop(proc: subprocess.Popen | None) -> None:
    """Terminate a process we started and everything it started (serve.py's worker runs in a session
    of its own): SIGTERM to its group, then SIGKILL to whatever is left."""
    if proc is None:
        return
    children = descendants(proc)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
    for child in children:
        try:
            child.wait(timeout=30)
        except Exception:
            try:
                child.kill()
            except Exception:
                pass


def digest(root: Path, parts=("models", "metrics", "plots", "results", "tables")) -> dict[str, str]:
    """Every file under the workspace's output folders, by content (sweeps/ aside: not a DVC output)."""
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for part in parts for p in sorted((root / part).rglob("*"))
            if p.is_file() and not str(p.relative_to(root)).startswith("results/sweeps")}


def git(work: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=work, capture_output=True, text=True, env={**os.environ, **GIT_ENV})
    assert out.returncode == 0, f"git {' '.join(args)}: {out.stderr}"
    return out.stdout


def tiny_repo(work: Path) -> Path:
    """The parts of the repository a sweep needs, with tiny params, as a git + DVC repo (one commit;
    the default DVC remote, dvc-remote/ in the copy, as a clone has it)."""
    work.mkdir(parents=True)
    for name in ("dvc.yaml", "stages", "src", "pipeline", "prefect.toml", ".gitignore", ".dvcignore", ".dvc/config"):
        src = REPO / name
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
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
    one_train_block(params)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (work / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")  # what `dvc init` writes
    git(work, "init", "-q")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "tiny")
    return work


def run_sweep(cwd: Path, env: dict[str, str], parameters: dict, timeout: float = 900, watch: bool = True):
    """`prefect deployment run megl/ablation --params JSON [--watch]`: (completed CLI, flow run id)."""
    cmd = [str(VENV_BIN / "prefect"), "deployment", "run", "megl/ablation", "--params", json.dumps(parameters)]
    if watch:
        cmd += ["--watch", "--watch-timeout", str(int(timeout))]
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout + 60)
    found = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout)
    assert found, out.stdout + out.stderr
    return out, found.group(1)


def cell_runs(api: str, run_id: str) -> list[dict]:
    """The megl-cell flow runs a sweep submitted (every attempt), oldest first."""
    runs = http_json(f"{api}/flow_runs/filter",
                     {"flow_runs": {"parent_flow_run_id": {"operator": "and_", "any_": [run_id]}}, "limit": 200})
    return sorted(runs, key=lambda r: r["created"])


@dataclasses.dataclass
class Sweep:
    work: Path  # the repository copy the sweep ran in (a user's checkout, its results committed)
    env: dict[str, str]  # Prefect client + MLflow environment of the serve process and the CLI
    api: str  # Prefect API URL
    mlflow_uri: str
    flow_run_id: str
    cli_output: str
    seconds: float  # `prefect deployment run ... --watch`, wall clock
    before: dict[str, str]  # digest() of the workspace before the sweep
    serve: subprocess.Popen | None = None
    serve_log: Path | None = None

    def start_serve(self) -> None:
        """`python pipeline/serve.py --local-slots 2` in the copy (again, after a test killed it)."""
        with open(self.serve_log, "a") as log:
            self.serve = subprocess.Popen([sys.executable, "pipeline/serve.py", "--local-slots", "2"], cwd=self.work,
                                          env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for("pipeline/serve.py", lambda: http_json(f"{self.api}/deployments/name/megl/ablation")["name"] == "ablation",
                 180, self.serve, self.serve_log)

    def run_deployment(self, parameters: dict, timeout: float = 900, watch: bool = True):
        return run_sweep(self.work, self.env, parameters, timeout, watch)

    def flow_run(self, run_id: str) -> dict:
        return http_json(f"{self.api}/flow_runs/{run_id}")

    def cell_runs(self, run_id: str) -> list[dict]:
        return cell_runs(self.api, run_id)

    def restore_workspace(self) -> None:
        """Back to the committed results: git's files, DVC's outputs from the cache, and nothing
        else in the output folders (a test's extra runs, its untracked .gitignore files)."""
        git(self.work, "checkout", "--", ".")
        git(self.work, "clean", "-fdq")
        for part in ("models", "metrics", "plots", "results", "data"):
            for folder in sorted((self.work / part).rglob("s*")):
                if folder.is_dir() and folder.name[1:].isdigit() and folder.name != "s0":
                    shutil.rmtree(folder)
        self.dvc("checkout")
        assert digest(self.work) == self.before

    def dvc(self, *args: str, ok: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        env = {k: v for k, v in self.env.items() if k != "MEGL_MLFLOW_PARENT_RUN_ID"}
        out = subprocess.run([str(VENV_BIN / "dvc"), *args], cwd=self.work, env=env, capture_output=True, text=True,
                             timeout=timeout)
        if ok:
            assert out.returncode == 0, f"dvc {' '.join(args)}\n{out.stdout[-4000:]}{out.stderr[-4000:]}"
        return out


@dataclasses.dataclass
class PrefectServer:
    process: subprocess.Popen
    api: str  # http://127.0.0.1:<port>/api
    env: dict[str, str]  # what a client of it needs: PREFECT_API_URL, PREFECT_HOME, analytics off
    log: Path


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """`prefect server start` on a free loopback port, its state in a temporary PREFECT_HOME (no UI)."""
    base = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(base / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false", "DO_NOT_TRACK": "1"}
    log = base / "server.log"
    with open(log, "w") as out:
        server = subprocess.Popen([str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                  cwd=base, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for("prefect server", lambda: http_json(f"{api}/health") is True, 180, server, log)
        yield PrefectServer(server, api, env, log)
    finally:
        stop(server)


@pytest.fixture(scope="session")
def ablation_sweep(tmp_path_factory, prefect_server):
    base = tmp_path_factory.mktemp("sweep")
    work = tiny_repo(base / "repo")
    api = prefect_server.api
    mlflow_uri = f"sqlite:///{base}/mlflow.db"
    env = {
        **prefect_server.env,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        **GIT_ENV,
    }
    for name in ("MEGL_MLFLOW_PARENT_RUN_ID", "MEGL_ROOT", "DVC_ROOT", "DVC_STAGE", "VIRTUAL_ENV"):
        env.pop(name, None)
    sweep = Sweep(work, env, api, mlflow_uri, "", "", 0.0, {}, serve_log=base / "serve.log")
    # the user's own results first: `dvc repro` of the workspace grid, committed
    sweep.dvc("repro")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "results")
    sweep.before = digest(work)
    try:
        sweep.start_serve()
        started = time.monotonic()
        out, run_id = sweep.run_deployment({**SWEEP, "max_parallel": 2})
        sweep.seconds = time.monotonic() - started
        sweep.flow_run_id, sweep.cli_output = run_id, out.stdout + out.stderr
        assert out.returncode == 0, sweep.cli_output[-6000:] + "\n--- serve.log\n" + sweep.serve_log.read_text()[-6000:]
        yield sweep
    finally:
        stop(sweep.serve)
