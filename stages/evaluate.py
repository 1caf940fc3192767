"""DVC stage: evaluate one trained run (dataset, backbone, variant, seed) on the test split.

Under <kind>/<d>/<b>/<v>/s<seed>/ (megl.layout), reading models/...:
  metrics/.../test.json (deterministic, gated), metrics/.../efficiency.json (timings, not gated),
  plots/.../{per_class_f1,confusion}.json, results/.../
--seed (default: params train.seed) picks the run and seeds the evaluation; it must be the seed
the model was trained with (its config.json says which).
Run by hand for a run dvc.yaml declares, it ends with `dvc commit` of its stage (megl.dvc_commit).
"""

import argparse
import json
import sys

from megl.dvc_commit import record_by_hand_run
from megl.layout import run_layout
from megl.run_cli import add_run_arguments, resolve_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, seed_help="the run's training seed")
    args = parser.parse_args()
    params, key = resolve_run(args, "evaluate")
    layout = run_layout(params.root, key)
    config_file = layout.model_dir / "config.json"
    meteor = None
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        trained_seed = config.get("train", {}).get("seed")
        if trained_seed != key.seed:
            sys.exit(f"evaluate: {layout.relative(config_file)} was trained with seed {trained_seed}, not {key.seed}")
        if config.get("writes_explanations"):
            # METEOR's JVM loads its paraphrase table (~6 s) on the other core while torch and
            # transformers import (~8 s, one core): ~4 s less per text run on two cores
            from megl.evaluate.text import start_meteor

            meteor = start_meteor()
    from megl.data.records import DataError
    from megl.evaluate.run import evaluate

    try:
        metrics = evaluate(params, key.dataset, key.backbone, key.variant, layout, meteor)
    except (FileNotFoundError, TimeoutError, DataError) as exc:
        sys.exit(f"evaluate: {exc}")
    print(json.dumps(metrics))
    record_by_hand_run(params.root, args.params, key.stage("evaluate"))


if __name__ == "__main__":
    main()
