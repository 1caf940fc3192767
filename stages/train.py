"""DVC stage: train one (dataset, backbone, variant) -> models/<d>/<b>/<v>/ + metrics/<d>/<b>/train_<v>.json.

Multi-process: accelerate launch --config_file configs/accelerate/<name>.yaml stages/train.py ...
"""

import argparse
import sys
from pathlib import Path

from megl.config import ConfigError, load_params
from megl.train import RunPaths, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint")
    parser.add_argument("--max-steps", type=int, help="stop early (smoke tests)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="outputs go under its folder")
    args = parser.parse_args()
    try:
        params = load_params(args.params)
        params.variant(args.variant)
        params.backbone(args.backbone)
    except ConfigError as exc:
        sys.exit(f"train: {exc}")
    run = Path(args.dataset) / args.backbone / args.variant
    paths = RunPaths(
        model_dir=params.root / "models" / run,
        checkpoint_dir=params.root / "checkpoints" / run,
        metrics_file=params.root / "metrics" / args.dataset / args.backbone / f"train_{args.variant}.json",
        history_file=params.root / "plots" / args.dataset / args.backbone / f"history_{args.variant}.json",
    )
    try:
        train(params, args.dataset, args.backbone, args.variant, paths, resume=args.resume, max_steps=args.max_steps)
    except (ConfigError, FloatingPointError) as exc:
        sys.exit(f"train: {exc}")


if __name__ == "__main__":
    main()
