"""DVC stage: train one run (dataset, backbone, variant, seed) -> models/<d>/<b>/<v>/s<seed>/,
metrics/<d>/<b>/<v>/s<seed>/train.json, plots/<d>/<b>/<v>/s<seed>/history.json (megl.layout).

--seed (default: params train.seed) becomes params.train.seed for the whole run, so the exported
config.json and the tracked params carry it.
Multi-process: accelerate launch --config_file configs/accelerate/<name>.yaml stages/train.py ...
"""

import argparse
import dataclasses
import sys
from pathlib import Path

from megl.config import ConfigError, load_params
from megl.layout import RunKey
from megl.train import RunPaths, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--seed", type=int, help="training seed (default: params train.seed)")
    parser.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    parser.add_argument("--max-steps", type=int, help="stop early (smoke tests)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="outputs go under its folder")
    args = parser.parse_args()
    try:
        params = load_params(args.params)
        params.variant(args.variant)
        params.backbone(args.backbone)
        seed = params.train.seed if args.seed is None else args.seed
        key = RunKey(args.dataset, args.backbone, args.variant, seed)
    except (ConfigError, ValueError) as exc:
        sys.exit(f"train: {exc}")
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, seed=seed))
    try:
        train(params, args.dataset, args.backbone, args.variant, RunPaths.for_run(params.root, key),
              resume=args.resume, max_steps=args.max_steps)
    except (ConfigError, FloatingPointError) as exc:
        sys.exit(f"train: {exc}")


if __name__ == "__main__":
    main()
