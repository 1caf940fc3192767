"""CI's regression gate: reproduced metrics (working tree) vs the committed ones (HEAD).

Exits 1 with a report naming each regressed or missing metric; 0 otherwise.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from megl.gate import check, load_tolerances, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tolerances", type=Path, default=Path("metrics/tolerances.yaml"))
    parser.add_argument("--rev", default="HEAD", help="the committed metrics to compare against")
    parser.add_argument("--targets", nargs="+", default=["metrics"], help="files or folders of metrics JSON (recursive)")
    args = parser.parse_args()
    tolerances = load_tolerances(args.tolerances)
    # dvc from this interpreter: .ci/run calls the gate without the venv on PATH. The per-run files are
    # outputs, not declared metrics (dvc.yaml declares only the summary), so they are named as targets.
    out = subprocess.run([sys.executable, "-m", "dvc", "metrics", "diff", args.rev, "--json", "--all", "--targets", *args.targets, "-R"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"check_regression: dvc metrics diff failed: {out.stderr.strip()}")
    text, ok = report(check(json.loads(out.stdout or "{}"), tolerances))
    print(text, end="")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
