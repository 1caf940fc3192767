"""DVC stage: raw layout -> data/<dataset>/{manifest.parquet, classes.json, images.npy} + dataset report."""

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from megl.config import ConfigError, load_params
from megl.data.extract import extract_dataset
from megl.data.records import DataError
from megl.layout import data_dir, dataset_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dataset", required=True, help="a key of the params 'datasets' block")
    parser.add_argument("--raw-dir", type=Path, help="override datasets.<dataset>.raw_dir")
    parser.add_argument("--out", type=Path, help="output dir (default: data/<dataset>)")
    parser.add_argument("--report", type=Path, help="report path (default: metrics/<dataset>/dataset.json)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="outputs go under its folder")
    args = parser.parse_args()
    try:
        params = load_params(args.params)
        cfg = params.dataset(args.dataset)
        if args.raw_dir:
            cfg = dataclasses.replace(cfg, raw_dir=str(args.raw_dir.resolve()))
        report = extract_dataset(
            args.dataset,
            cfg,
            params.split,
            args.out or data_dir(params.root, args.dataset),
            args.report or dataset_report(params.root, args.dataset),
        )
    except (ConfigError, DataError) as exc:
        sys.exit(f"extract {args.dataset}: {exc}")
    print(json.dumps({k: report[k] for k in ("dataset", "table1", "samples", "splits", "seconds")}))


if __name__ == "__main__":
    main()
