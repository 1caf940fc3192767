"""Serve every deployment of the project from one process (make prefect-serve):

    . pipeline/env.sh && python pipeline/serve.py

Deployments: `megl/ablation` (pipeline/flows.py, the ablation sweep). Runs are executed by this
process, one flow run at a time (two sweeps over the same runs would write the same files; a second
run waits in the queue). Ctrl-C stops serving.

Without pipeline/env.sh, Prefect's state still defaults to <repo>/.prefect and the API to
http://127.0.0.1:4200/api (a server started by `make prefect-server`), never ~/.prefect or Prefect Cloud.
"""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _defaults() -> None:
    """Loopback server, state inside the repository, no analytics: set before prefect is imported."""
    os.environ.setdefault("PREFECT_HOME", str(REPO / ".prefect"))
    os.environ.setdefault("PREFECT_API_URL", f"http://127.0.0.1:{os.environ.get('MEGL_PREFECT_PORT', '4200')}/api")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def deployments() -> list:
    """Every deployment of the project (add new ones here)."""
    if str(REPO / "pipeline") not in sys.path:
        sys.path.insert(0, str(REPO / "pipeline"))
    from flows import megl_sweep

    return [
        megl_sweep.to_deployment(
            "ablation",
            description="Ablation sweep: datasets x backbones x variants x seeds (None = params.yaml grid), "
            "at most max_parallel runs at once; tables and an MLflow parent run at the end.",
            tags=["megl"],
        ),
    ]


def main() -> None:
    _defaults()
    from prefect import serve

    os.chdir(REPO)  # deployment entrypoints are relative to the repository
    serve(*deployments(), limit=1)


if __name__ == "__main__":
    main()
