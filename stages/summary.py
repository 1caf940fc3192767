"""DVC stage: the grid at a glance -> summary/ (src/megl/summary.py).

summary/metrics.json: accuracy, mIoU and CIDEr per cell (mean over the seeds found), the one metrics
file dvc.yaml declares, so `dvc exp show` and `dvc metrics diff` show a few columns, not every
run's 40 keys. summary/runs.json: every extraction report and every run's test metrics, committed to
git, what the regression gate compares. summary/{history,accuracy,miou}.json: the data of dvc.yaml's
top-level plots.
"""

import sys

from megl.atomic import write_bytes
from megl.config import ConfigError, load_params
from megl.summary import build, dump


def main() -> None:
    try:
        params = load_params("params.yaml")
    except ConfigError as exc:
        sys.exit(f"summary: {exc}")
    grid = params.grid
    parts = build(params.root, grid.datasets, grid.backbones, grid.variants, grid.seeds, reports=sorted(params.datasets))
    for name, value in parts.items():
        write_bytes(params.root / "summary" / f"{name}.json", dump(value))
    print(f"summary: {len(parts['accuracy'])} cells, {len(parts['history'])} epoch rows -> summary/")


if __name__ == "__main__":
    main()
