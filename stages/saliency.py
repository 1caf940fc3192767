"""DVC stage: aggregate ground-truth maps -> data/<dataset>/saliency/ + metrics/<dataset>/saliency.json."""

import argparse
import json
import sys
from pathlib import Path

from megl.config import ConfigError, load_params
from megl.data.records import DataError
from megl.data.saliency import build_saliency
from megl.layout import data_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="a key of the params 'datasets' block")
    parser.add_argument("--data", type=Path, help="extracted dataset dir (default: data/<dataset>)")
    parser.add_argument("--report", type=Path, help="report path (default: metrics/<dataset>/saliency.json)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="outputs go under its folder")
    args = parser.parse_args()
    try:
        params = load_params(args.params)
        data = args.data or data_dir(params.root, args.dataset)
        report = build_saliency(
            args.dataset,
            params.dataset(args.dataset),
            params.saliency,
            data,
            data / "saliency",
            args.report or params.root / "metrics" / args.dataset / "saliency.json",
        )
    except (ConfigError, DataError) as exc:
        sys.exit(f"saliency {args.dataset}: {exc}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
