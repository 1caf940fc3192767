# The Python every DVC stage runs with (dvc.yaml: `sh stages/python.sh stages/<stage>.py ...`), so
# that `dvc repro` works however DVC was started: from an activated virtualenv, as .venv/bin/dvc
# without activating it, through make, or from a queued experiment (`dvc exp run --queue`, which
# runs in a temporary copy of the project). The first of:
#   1. $MEGL_PYTHON, when set;
#   2. the project's .venv/bin/python (what `make venv` builds), found from $DVC_ROOT, which DVC
#      sets to the project's root, also in a queued experiment's copy;
#   3. the activated virtualenv's python ($VIRTUAL_ENV);
#   4. python3 on PATH (a conda environment, a system install).
# The stage imports megl from the source next to this file, so a queued experiment runs the code
# it was queued with, not whatever the project's editable install points at now.
here=$(cd "$(dirname "$0")/.." && pwd)
root=${DVC_ROOT:-$here}
if [ -n "${MEGL_PYTHON:-}" ]; then
    py=$MEGL_PYTHON
elif [ -x "$root/.venv/bin/python" ]; then
    py=$root/.venv/bin/python
elif [ -x "$here/.venv/bin/python" ]; then
    py=$here/.venv/bin/python
elif [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    py=$VIRTUAL_ENV/bin/python
else
    py=python3
fi
PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}" exec "$py" "$@"
