"""The pinned Prefect + fastapi pair must serve: Prefect 3.8 crashes at start with fastapi >= 0.151.

A real server on loopback, with its state in a temporary PREFECT_HOME.
"""

import os
import socket
import subprocess
import time
import urllib.request

import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_prefect_server_starts_and_answers(tmp_path, venv_bin):
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
    }
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [str(venv_bin / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        body = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as resp:
                    body = resp.read().decode()
                    break
            except OSError:
                time.sleep(1)
        assert body == "true", (tmp_path / "server.log").read_text()[-3000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
