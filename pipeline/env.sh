# Source from the repository root (POSIX sh, bash, zsh):   . pipeline/env.sh
# Everything the Prefect server, `pipeline/serve.py` and the `prefect` CLI need, in one place (the
# Makefile's prefect-* targets source it too):
#   - Prefect's state (its SQLite database, profiles) inside the repository: .prefect/ (gitignored)
#   - the API on loopback: http://127.0.0.1:$MEGL_PREFECT_PORT/api (default port 4200), streaming logs
#   - no analytics / telemetry from Prefect, MLflow or DVC
#   - the project's virtualenv first on PATH (stages and DVC call `python`)
if [ ! -f pipeline/env.sh ] || [ ! -f params.yaml ]; then
    echo "pipeline/env.sh: source it from the repository root (. pipeline/env.sh)" >&2
    return 1 2>/dev/null || exit 1
fi
# this clone: a worker's flow runs enter it (the pool deployment's pull step reads $MEGL_ROOT)
export MEGL_ROOT="$(pwd)"
export MEGL_PREFECT_PORT="${MEGL_PREFECT_PORT:-4200}"
export PREFECT_HOME="$MEGL_ROOT/.prefect"
# a worker on another host: MEGL_PREFECT_API_URL=http://<server host>:4200/api before sourcing
export PREFECT_API_URL="${MEGL_PREFECT_API_URL:-http://127.0.0.1:$MEGL_PREFECT_PORT/api}"
export PREFECT_SERVER_API_HOST=127.0.0.1
export PREFECT_SERVER_API_PORT="$MEGL_PREFECT_PORT"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
# flow runs send a heartbeat every 30 s; one silent for 90 s (its worker host died) is marked Crashed
# by the automation pipeline/serve.py registers, and the sweep submits its cell again
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30
# a worker looks for new cells every 5 s (Prefect: 10): less waiting per cell
export PREFECT_WORKER_QUERY_SECONDS=5
# the server streams flow-run logs to `prefect deployment run ... --watch` (off by default)
export PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED=true
export PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED=true
export DO_NOT_TRACK=1
export MLFLOW_DISABLE_TELEMETRY=true
export DVC_NO_ANALYTICS=1
export PATH="$MEGL_ROOT/.venv/bin:$PATH"
