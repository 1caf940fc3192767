"""DVC stage: write a synthetic benchmark in its real raw layout (params: synthetic.<name>, split)."""

import argparse
import json
import sys
import time
from pathlib import Path

from megl.config import ConfigError, load_params
from megl.data.synthetic import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="a key of the params 'synthetic' block")
    parser.add_argument("--out", type=Path, help="output raw dir (default: synthetic.<dataset>.out_dir)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="outputs go under its folder")
    args = parser.parse_args()
    started = time.perf_counter()
    try:
        params = load_params(args.params)
        cfg = params.synthetic_source(args.dataset)
        out = args.out or Path(cfg.out_dir)
        summary = generate(cfg, params.split, out)
    except ConfigError as exc:
        sys.exit(f"synthesize {args.dataset}: {exc}")
    print(json.dumps({"dataset": args.dataset, "out": str(out), "seconds": round(time.perf_counter() - started, 2), **summary}))


if __name__ == "__main__":
    main()
