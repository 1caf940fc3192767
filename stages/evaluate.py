"""DVC stage: evaluate one trained run (dataset, backbone, variant, seed) on the test split.

Under <kind>/<d>/<b>/<v>/s<seed>/ (megl.layout), reading models/...:
  metrics/.../test.json (deterministic, gated), metrics/.../efficiency.json (timings, not gated),
  plots/.../{per_class_f1,confusion}.json, results/.../
--seed (default: params train.seed) picks the run and seeds the evaluation; it must be the seed
the model was trained with (its config.json says which).
"""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from megl.config import ConfigError, load_params
from megl.layout import RunKey, run_layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--variant", required=True)
    parser.add_argument("--seed", type=int, help="the run's training seed (default: params train.seed)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="outputs go under its folder")
    args = parser.parse_args()
    from megl.evaluate.run import EvalPaths, evaluate

    try:
        params = load_params(args.params)
        seed = params.train.seed if args.seed is None else args.seed
        key = RunKey(args.dataset, args.backbone, args.variant, seed)
    except (ConfigError, ValueError) as exc:
        sys.exit(f"evaluate: {exc}")
    layout = run_layout(params.root, key)
    config_file = layout.model_dir / "config.json"
    if config_file.is_file():
        trained_seed = json.loads(config_file.read_text()).get("train", {}).get("seed")
        if trained_seed != seed:
            sys.exit(f"evaluate: {layout.relative(config_file)} was trained with seed {trained_seed}, not {seed}")
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, seed=seed))
    try:
        metrics = evaluate(params, args.dataset, args.backbone, args.variant, EvalPaths.for_run(params.root, key))
    except (FileNotFoundError, TimeoutError) as exc:
        sys.exit(f"evaluate: {exc}")
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
