"""DVC stage: evaluate one trained model on the test split.

-> metrics/<d>/<b>/<v>.json (deterministic), metrics/<d>/<b>/efficiency_<v>.json (timings),
   plots/<d>/<b>/{per_class_f1,confusion}_<v>.json, results/<d>/<b>/<v>/
"""

import argparse
import json
import sys
from pathlib import Path

from megl.config import ConfigError, load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="outputs go under its folder")
    args = parser.parse_args()
    from megl.evaluate.run import EvalPaths, evaluate

    try:
        params = load_params(args.params)
    except ConfigError as exc:
        sys.exit(f"evaluate: {exc}")
    run = Path(args.dataset) / args.backbone / args.variant
    out = params.root / "metrics" / args.dataset / args.backbone
    paths = EvalPaths(
        model_dir=params.root / "models" / run,
        metrics_file=out / f"{args.variant}.json",
        efficiency_file=out / f"efficiency_{args.variant}.json",
        per_class_f1_file=params.root / "plots" / run.parent / f"per_class_f1_{args.variant}.json",
        confusion_file=params.root / "plots" / run.parent / f"confusion_{args.variant}.json",
        results_dir=params.root / "results" / run,
    )
    try:
        metrics = evaluate(params, args.dataset, args.backbone, args.variant, paths)
    except (FileNotFoundError, TimeoutError) as exc:
        sys.exit(f"evaluate: {exc}")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
