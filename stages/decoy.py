"""DVC stage: write DecoyFMNIST in the generic layout (params: decoys.<name>)."""

import argparse
import json
import sys
import time
from pathlib import Path

from megl.config import ConfigError, load_params
from megl.data.decoy_fmnist import write_generic
from megl.data.records import DataError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="a key of the params 'decoys' block")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="outputs go under its folder")
    args = parser.parse_args()
    started = time.perf_counter()
    try:
        params = load_params(args.params)
        if args.dataset not in params.decoys:
            raise ConfigError(f"no decoys block {args.dataset!r}; params.yaml defines {sorted(params.decoys)}")
        cfg = params.decoys[args.dataset]
        summary = write_generic(Path(cfg.source_dir), Path(cfg.out_dir), cfg.seed, cfg.visual_fraction, cfg.train_samples)
    except (ConfigError, DataError) as exc:
        sys.exit(f"decoy {args.dataset}: {exc}")
    print(json.dumps({"dataset": args.dataset, "out": cfg.out_dir, "seconds": round(time.perf_counter() - started, 2), **summary}))


if __name__ == "__main__":
    main()
