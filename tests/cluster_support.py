"""Several hosts on loopback, for tests/test_scale_out.py and benchmarks/sweep_scaleout.py.

`Cluster`: PostgreSQL (Debian's server, pipeline/postgres.py) behind a Prefect server and an MLflow
tracking server (artifacts proxied by it), a DVC remote folder, the controller's clone (a user's
checkout: `pipeline/serve.py --local-slots 0`), and worker clones, each a `git clone` of it with its
own PREFECT_HOME, its own DVC cache and the shared remote in `.dvc/config.local`, running
`prefect worker start --pool megl --work-queue commit-<sha> --limit 1` (what `make prefect-worker`
runs). The hosts share nothing but the two servers' HTTP APIs and the DVC remote folder.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from sweep_support import GIT_ENV, REPO, VENV_BIN, cell_runs, free_port, git, http_json, run_sweep, stop, tiny_repo, wait_for

sys.path.insert(0, str(REPO / "pipeline"))
import postgres  # noqa: E402


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("MEGL_MLFLOW_PARENT_RUN_ID", "MEGL_ROOT", "DVC_ROOT", "DVC_STAGE", "VIRTUAL_ENV",
                        "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "PREFECT_HOME")}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_UI_ENABLED="false", DO_NOT_TRACK="1", MLFLOW_DISABLE_TELEMETRY="true",
               DVC_NO_ANALYTICS="1", PREFECT_FLOWS_HEARTBEAT_FREQUENCY="30", PREFECT_WORKER_QUERY_SECONDS="5",
               **GIT_ENV)
    return env


@dataclasses.dataclass
class Worker:
    clone: Path
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None

    def start(self, queue: str) -> None:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "prefect"), "worker", "start", "--pool", "megl", "--type", "process",
                 "--work-queue", queue, "--limit", "1"],
                cwd=self.clone, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@dataclasses.dataclass
class Cluster:
    base: Path
    pg_data: Path
    api: str
    mlflow_uri: str
    remote: Path
    controller: Path
    env: dict[str, str]  # the controller's (and the CLI's) environment
    workers: list[Worker]
    procs: list[subprocess.Popen]

    @property
    def commit(self) -> str:
        return git(self.controller, "rev-parse", "HEAD").strip()

    def run_sweep(self, parameters: dict, timeout: float = 1500, watch: bool = True):
        return run_sweep(self.controller, self.env, parameters, timeout, watch)

    def flow_run(self, run_id: str) -> dict:
        return http_json(f"{self.api}/flow_runs/{run_id}")

    def cell_runs(self, run_id: str) -> list[dict]:
        return cell_runs(self.api, run_id)

    def clone(self, name: str, remote: bool = True) -> Path:
        """Another checkout of the controller's commit (for a local `dvc repro`, or to pull results)."""
        path = self.base / name
        git(self.base, "clone", "-q", str(self.controller), str(path))
        if remote:
            dvc(path, self.env, "remote", "modify", "--local", "storage", "url", str(self.remote))
        else:
            dvc(path, self.env, "remote", "remove", "storage")
        return path

    def close(self) -> None:
        for worker in self.workers:
            stop(worker.proc)
        for proc in reversed(self.procs):
            stop(proc)
        postgres.stop(self.pg_data)


def http_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode().strip()


def dvc(cwd: Path, env: dict[str, str], *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    out = subprocess.run([str(VENV_BIN / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"dvc {' '.join(args)} in {cwd}\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
    return out


def start_cluster(base: Path, workers: int = 2, threads: int = 2, params_update=None) -> Cluster:
    """Everything above, started; close() stops it. `threads`: params compute.threads of the sweep."""
    env = base_env()
    procs: list[subprocess.Popen] = []
    # initdb runs as Debian's postgres user under root: a folder it can enter
    pg_root = Path(tempfile.mkdtemp(prefix="megl-pg-"))
    pg_root.chmod(0o755)
    pg_data = pg_root / "data"
    cluster = None
    try:
        pg_port = free_port()
        urls = postgres.start(pg_data, pg_port)
        api_port, mlflow_port = free_port(), free_port()
        api, mlflow_uri = f"http://127.0.0.1:{api_port}/api", f"http://127.0.0.1:{mlflow_port}"
        server_env = {**env, "PREFECT_HOME": str(base / "prefect-server"),
                      "PREFECT_API_DATABASE_CONNECTION_URL": urls["prefect"]}
        with open(base / "prefect-server.log", "w") as log:
            procs.append(subprocess.Popen(
                [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(api_port)],
                cwd=base, env=server_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        with open(base / "mlflow-server.log", "w") as log:
            procs.append(subprocess.Popen(
                [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", urls["mlflow"], "--serve-artifacts",
                 "--artifacts-destination", str(base / "mlflow-artifacts"), "--host", "127.0.0.1", "--port",
                 str(mlflow_port), "--workers", "1"],
                cwd=base, env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True))
        wait_for("prefect server (PostgreSQL)", lambda: http_json(f"{api}/health") is True, 240, procs[0],
                 base / "prefect-server.log")
        wait_for("mlflow server (PostgreSQL)", lambda: http_text(f"{mlflow_uri}/health") == "OK", 240, procs[1],
                 base / "mlflow-server.log")

        controller = tiny_repo(base / "controller")
        params = yaml.safe_load((controller / "params.yaml").read_text())
        params["compute"]["threads"] = threads
        if params_update:
            params_update(params)
        (controller / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        git(controller, "commit", "-q", "--allow-empty", "-am", "cluster params")
        remote = base / "dvc-remote"
        remote.mkdir()
        common = {**env, "PREFECT_API_URL": api, "MLFLOW_TRACKING_URI": mlflow_uri}
        cluster = Cluster(base, pg_data, api, mlflow_uri, remote, controller,
                          {**common, "PREFECT_HOME": str(base / "prefect-controller"), "MEGL_ROOT": str(controller)},
                          [], procs)
        dvc(controller, cluster.env, "remote", "modify", "--local", "storage", "url", str(remote))
        with open(base / "serve.log", "w") as log:
            procs.append(subprocess.Popen([sys.executable, "pipeline/serve.py", "--local-slots", "0"], cwd=controller,
                                          env=cluster.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        wait_for("pipeline/serve.py", lambda: http_json(f"{api}/deployments/name/megl-cell/pool")["name"] == "pool",
                 180, procs[-1], base / "serve.log")
        queue = f"commit-{cluster.commit[:12]}"
        for i in range(workers):
            clone = cluster.clone(f"worker-{i}")
            worker = Worker(clone, {**common, "PREFECT_HOME": str(base / f"prefect-worker-{i}"), "MEGL_ROOT": str(clone)},
                            base / f"worker-{i}.log")
            worker.start(queue)
            cluster.workers.append(worker)
        for worker in cluster.workers:
            wait_for("a worker", lambda: "started" in worker.log.read_text(), 120, worker.proc, worker.log)
        return cluster
    except BaseException:
        if cluster is not None:
            cluster.close()
        else:
            for proc in reversed(procs):
                stop(proc)
            postgres.stop(pg_data)
        raise


def wait_until(what: str, probe, timeout: float, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not after {timeout} s")
