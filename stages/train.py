"""DVC stage: train one run (dataset, backbone, variant, seed) -> models/<d>/<b>/<v>/s<seed>/,
metrics/<d>/<b>/<v>/s<seed>/train.json, plots/<d>/<b>/<v>/s<seed>/history.json (megl.layout).

--seed (default: params train.seed) becomes params.train.seed for the whole run, so the exported
config.json and the tracked params carry it.
Multi-process: accelerate launch --config_file configs/accelerate/<name>.yaml stages/train.py ...
Run by hand for a run dvc.yaml declares, it ends with `dvc commit` of its stage (megl.dvc_commit).
"""

import argparse
import sys

from megl.config import ConfigError
from megl.data.records import DataError
from megl.dvc_commit import record_by_hand_run
from megl.run_cli import add_run_arguments, resolve_run
from megl.layout import run_layout
from megl.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, seed_help="training seed")
    parser.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    parser.add_argument("--max-steps", type=int, help="stop early (smoke tests)")
    args = parser.parse_args()
    params, key = resolve_run(args, "train")
    try:
        train(params, key.dataset, key.backbone, key.variant, run_layout(params.root, key),
              resume=args.resume, max_steps=args.max_steps)
    except (ConfigError, DataError, FloatingPointError) as exc:
        sys.exit(f"train: {exc}")
    if args.max_steps is None:  # a smoke run is not what dvc.yaml's command makes: never recorded as it
        record_by_hand_run(params.root, args.params, key.stage("train"))


if __name__ == "__main__":
    main()
