"""The project's Prefect server and `pipeline/serve.py`, for real, on the session's server
(`prefect_server`, tests/sweep_support.py) and a copy of the repository that serves nothing but
refusals (no sweep runs here):

- the pinned Prefect + fastapi pair serves (Prefect 3.8 crashes at start with fastapi >= 0.151);
- the `prefect` CLI run from the repository root without `. pipeline/env.sh` reaches the project's
  server (prefect.toml), and the server refuses a misspelled variant, listing the defined ones;
- SIGINT and SIGTERM stop serve.py within seconds in every phase: registering against an API that
  hangs, serving with the API up (exit 0), serving after the API died (exit 1, saying so).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from sweep_support import GIT_ENV, VENV_BIN, descendants, free_port, http_json, stop, tiny_repo, wait_for

pytestmark = pytest.mark.slow

STOP_WITHIN_S = 15  # serve.py allows itself 3 s to ask the API, 5 s before SIGKILL; the rest is margin


def running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def worker_started(serve: subprocess.Popen) -> bool:
    try:
        return any("worker" in " ".join(p.cmdline()) for p in descendants(serve))
    except psutil.Error:
        return False


def serve_env(api: str, home: Path) -> dict[str, str]:
    env = {**os.environ, **GIT_ENV, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "PREFECT_API_URL": api,
           "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    for name in ("MEGL_ROOT", "VIRTUAL_ENV", "MEGL_PREFECT_PORT", "MEGL_PREFECT_API_URL"):
        env.pop(name, None)
    return env


class Serve:
    """`python pipeline/serve.py --local-slots 1` in `work`, its output in a log."""

    def __init__(self, work: Path, env: dict[str, str], log: Path):
        self.log = log
        self.started = datetime.now(timezone.utc)
        with open(log, "a") as out:
            self.process = subprocess.Popen([sys.executable, "pipeline/serve.py", "--local-slots", "1"], cwd=work,
                                            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_serving(self, api: str) -> None:
        """Its local worker started and its runner polling for megl/ablation's flow runs."""
        def serving() -> bool:
            polled = http_json(f"{api}/deployments/name/megl/ablation").get("last_polled")
            return bool(polled) and datetime.fromisoformat(polled.replace("Z", "+00:00")) > self.started \
                and worker_started(self.process)

        wait_for("pipeline/serve.py", serving, 180, self.process, self.log)

    def signal_and_wait(self, signum: int) -> tuple[int, float, list]:
        """Send `signum`; (exit code, seconds to exit, the processes it had started that still run)."""
        started = descendants(self.process)
        sent = time.monotonic()
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            code = None
        seconds = time.monotonic() - sent
        return code, seconds, [p for p in started if running(p)]

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="module")
def served(prefect_server, tmp_path_factory):
    """A copy of the repository (git, no results) whose serve.py registered its deployments on the
    session's server; a test stops it."""
    base = tmp_path_factory.mktemp("served")
    work = tiny_repo(base / "repo")
    serve = Serve(work, serve_env(prefect_server.api, base / "prefect"), base / "serve.log")
    try:
        serve.wait_serving(prefect_server.api)
        yield work, serve
    finally:
        stop(serve.process)


def test_prefect_server_starts_and_answers(prefect_server):
    assert http_json(f"{prefect_server.api}/health") is True, prefect_server.log.read_text()[-3000:]


def test_the_cli_without_env_sh_reaches_the_projects_server_and_refuses_a_misspelled_variant(served, prefect_server,
                                                                                             tmp_path):
    """Forgetting `. pipeline/env.sh` used to start a temporary server (a SQL traceback) and answer
    "Deployment 'megl/ablation' not found!". From the repository root prefect.toml names the project's
    server; its port here is the test server's (the repository's is env.sh's default, test_prefect_flow.py)."""
    work, _ = served
    toml = work / "prefect.toml"
    toml.write_text(toml.read_text().replace("http://127.0.0.1:4200/api", prefect_server.api))
    bare = {"HOME": str(tmp_path), "PATH": f"{VENV_BIN}{os.pathsep}/usr/bin:/bin", "LANG": "C.UTF-8"}  # no PREFECT_*
    out = subprocess.run([str(VENV_BIN / "prefect"), "deployment", "run", "megl/ablation",
                          "--params", json.dumps({"variants": ["megl", "megll"]})],
                         cwd=work, env=bare, capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert "not found" not in text and "temporary server" not in text, text
    # refused by the server before a flow run exists, naming the defined variants
    assert "'megll' is not one of ['baseline'," in text and "'visual_text'" in text, text
    assert "Created flow run" not in text, text


def test_sigint_stops_serve_and_its_worker_within_seconds(served):
    _, serve = served
    code, seconds, left = serve.signal_and_wait(signal.SIGINT)
    assert (code, left) == (0, []), serve.output()[-4000:]
    assert seconds < STOP_WITHIN_S, serve.output()[-4000:]
    assert "SIGINT while serving: stopping" in serve.output()


def test_sigterm_after_the_api_died_stops_serve_within_seconds_exit_1(prefect_server, tmp_path):
    """The API gone while serving (here: its server frozen, so requests hang): Prefect's runner used
    to retry the API for minutes on the way out."""
    work = tiny_repo(tmp_path / "repo")
    serve = Serve(work, serve_env(prefect_server.api, tmp_path / "prefect"), tmp_path / "serve.log")
    try:
        serve.wait_serving(prefect_server.api)
        os.killpg(prefect_server.process.pid, signal.SIGSTOP)
        try:
            code, seconds, left = serve.signal_and_wait(signal.SIGTERM)
        finally:
            os.killpg(prefect_server.process.pid, signal.SIGCONT)
        assert (code, left) == (1, []), serve.output()[-4000:]
        assert seconds < STOP_WITHIN_S, serve.output()[-4000:]
        assert f"the Prefect API at {prefect_server.api} does not answer" in serve.output()
    finally:
        stop(serve.process)


class HangingApi(ThreadingHTTPServer):
    """An API that answers its health check and nothing else: serve.py hangs in registration."""

    daemon_threads = True

    def __init__(self):
        self.release = threading.Event()
        self.paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(handler):  # noqa: N805
                self.paths.append(handler.path)
                if handler.path.endswith("/health"):
                    body = b"true"
                    handler.send_response(200)
                    handler.send_header("Content-Type", "application/json")
                    handler.send_header("Content-Length", str(len(body)))
                    handler.end_headers()
                    handler.wfile.write(body)
                else:
                    self.release.wait(300)

            do_POST = do_PATCH = do_PUT = do_GET

            def log_message(handler, *args):  # noqa: N805
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_registering_against_a_hanging_api_stops_serve(signum, tmp_path):
    """The work pool is registered before serving starts; a signal then used to be a traceback (SIGINT)
    or unhandled (SIGTERM). No server needed: the API here only answers its health check."""
    api = HangingApi()
    threading.Thread(target=api.serve_forever, daemon=True).start()
    work = tiny_repo(tmp_path / "repo")
    serve = Serve(work, serve_env(f"http://127.0.0.1:{api.server_address[1]}/api", tmp_path / "prefect"),
                  tmp_path / "serve.log")
    try:
        wait_for("registration", lambda: any(not p.endswith("/health") for p in api.paths), 120, serve.process, serve.log)
        code, seconds, _ = serve.signal_and_wait(signum)
        name = signal.Signals(signum).name
        assert code == 128 + signum and seconds < STOP_WITHIN_S, serve.output()[-4000:]
        assert f"{name} while registering the work pool: stopping" in serve.output() and "Traceback" not in serve.output()
    finally:
        api.release.set()
        api.shutdown()
        stop(serve.process)
