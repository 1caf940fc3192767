"""DVC stage: check params.yaml for the whole pipeline before any other stage runs.

Every other stage depends on this stage's output, so DVC runs it first whenever params.yaml
changes, and a bad value (a negative lr, `image_size: 0`, a raw_dir that does not exist, a typo in
a key) stops `dvc repro` / `dvc exp run` here, before DVC has touched any other stage's outputs.
The output's content does not depend on the params, so a valid edit re-runs only the stages
whose own params changed.
"""

import argparse
import sys
from pathlib import Path

from megl.atomic import write_bytes
from megl.config import ConfigError, load_params
from megl.pipeline_checks import check_pipeline

OUT = Path("data") / "params.ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="the file to check; the mark goes under its folder")
    args = parser.parse_args()
    try:
        params = load_params(args.params)
        check_pipeline(params, args.params)
    except ConfigError as exc:
        # what this stage knows: it runs first and stopped the run; it has not looked at the outputs
        sys.exit(f"validate: {exc}\nvalidate: stopped the run before any other stage ran "
                 "(`dvc status` compares the workspace with dvc.lock)")
    write_bytes(params.root / OUT, b"params.yaml passed stages/validate.py\n")
    print(f"validate: {args.params} is valid for the whole pipeline")


if __name__ == "__main__":
    main()
