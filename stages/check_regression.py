"""CI's regression gate: reproduced metrics (working tree) vs the committed ones (HEAD).

Both sides are summary/runs.json (the summary stage collects every gated file into it): the
committed copy from git, the reproduced one from the working tree. Exits 1 with a report naming each
regressed or missing metric; 0 otherwise.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from megl.gate import check, compare, load_tolerances, report


def committed(rev: str, path: str) -> dict:
    out = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"check_regression: no {path} at {rev}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tolerances", type=Path, default=Path("metrics/tolerances.yaml"))
    parser.add_argument("--rev", default="HEAD", help="the git revision holding the committed metrics")
    parser.add_argument("--runs", default="summary/runs.json", help="the collection of gated metrics files")
    args = parser.parse_args()
    tolerances = load_tolerances(args.tolerances)
    fresh = Path(args.runs)
    if not fresh.is_file():
        sys.exit(f"check_regression: {fresh} not found: reproduce first (make run, or dvc repro)")
    text, ok = report(check(compare(committed(args.rev, args.runs), json.loads(fresh.read_text())), tolerances))
    print(text, end="")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
