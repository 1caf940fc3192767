"""DVC stage: the paper's tables from metrics JSON alone -> tables/*.{md,csv,tex}.

Reads metrics/<d>/<b>/<v>/s<seed>/test.json (and efficiency.json) for every run of the grid
(params `grid`, or the overrides below). A run without test metrics is reported on stdout
(`missing: <run> (<path>)`) and skipped; the tables show the rest. Exits 0 when at least one run
was found, 1 when none was.
"""

import argparse
import sys
from pathlib import Path

from megl.config import ConfigError, load_params
from megl.tables import build_tables, load_runs, write_tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="metrics are read (and tables written) under its folder")
    parser.add_argument("--datasets", nargs="+", metavar="NAME", help="default: params grid.datasets")
    parser.add_argument("--backbones", nargs="+", metavar="NAME", help="default: params grid.backbones")
    parser.add_argument("--variants", nargs="+", metavar="NAME", help="default: params grid.variants")
    parser.add_argument("--seeds", nargs="+", type=int, metavar="N", help="default: params grid.seeds")
    parser.add_argument("--out", type=Path, help="output folder (default: tables/ under the params folder)")
    args = parser.parse_args()
    try:
        params = load_params(args.params)
        grid = params.select_grid(args.datasets, args.backbones, args.variants, args.seeds, label="--{kind}")
    except ConfigError as exc:
        sys.exit(f"tables: {exc}")

    runs = load_runs(params.root, grid.datasets, grid.backbones, grid.variants, grid.seeds, params.variants)
    for lay in runs.missing:
        print(f"missing: {lay.key.name} ({lay.relative(lay.test_metrics)})")
    total = len(runs.test) + len(runs.missing)
    if not runs.test:
        sys.exit(f"tables: none of the {total} runs has test metrics under {params.root / 'metrics'}; nothing to tabulate")
    out = args.out or params.root / "tables"
    write_tables(build_tables(runs), out)
    print(f"tables: {len(runs.test)} of {total} runs found, {len(runs.missing)} missing -> {out}")


if __name__ == "__main__":
    main()
