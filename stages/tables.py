"""DVC stage: the paper's tables from metrics JSON alone -> metrics/tables/*.{md,csv,tex}."""

import argparse
from pathlib import Path

from megl.config import load_params
from megl.tables import build_tables, write_tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="outputs go under its folder")
    args = parser.parse_args()
    params = load_params(args.params)
    metrics = params.root / "metrics"
    grid = params.grid
    write_tables(build_tables(metrics, list(grid.datasets), list(grid.backbones), list(grid.variants)), metrics / "tables")


if __name__ == "__main__":
    main()
