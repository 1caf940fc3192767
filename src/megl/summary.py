"""The grid at a glance, for DVC's own commands: the few headline numbers per cell as one metrics
file (`dvc exp show`, `dvc metrics diff` read it by default), and the data of the plots that overlay
the grid's runs (`dvc plots show`: validation accuracy per epoch, test accuracy and mIoU per method).

The per-run metrics (metrics/<d>/<b>/<v>/s<seed>/*.json, 40-odd keys each) are DVC-cached outputs,
what the tables read; `runs` collects the gated ones (each dataset's extraction report, each run's
test metrics) into one git-tracked file, summary/runs.json, keyed by their paths: the committed values
the regression gate compares a reproduction with (src/megl/gate.py), readable in git history without
DVC's cache. Only pathlib and json here, like the tables.

Honest by construction: a metric a run could not compute (a string status, `not_applicable`, an
absent key) is left out, never written as 0; a cell is the mean over the seeds found: `seeds` at the
top says how many the grid has, and a cell that found fewer says so with its own `seeds`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

from megl.layout import RunKey, dataset_report, grid_runs, run_layout

HEADLINE = ("accuracy", "miou", "cider")  # classification, localisation, text (Tables 2 and 3)
DIGITS = 4


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), DIGITS)


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _number(value) -> bool:  # as megl.tables counts a metric: a finite number, not a status string
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run_label(key: RunKey, several: dict[str, bool]) -> str:
    """A run's name on a chart: its variant, prefixed by dataset and backbone and suffixed by seed
    only where the grid has several of them (one dataset and backbone: `megl`)."""
    parts = [getattr(key, k) for k in ("dataset", "backbone") if several[k]] + [key.variant]
    return "/".join(parts) + (f"/s{key.seed}" if several["seed"] else "")


def build(root: Path, datasets, backbones, variants, seeds, reports: Iterable[str] = ()) -> dict[str, object]:
    """{"metrics": the compact metrics, "runs": the gated files found by repository-relative path (the
    extraction reports of `reports`, dataset names, then every run's test metrics), "history": rows for
    the per-epoch overlay, "accuracy" and "miou": rows for the per-method bars}; runs without test
    metrics are left out (the tables stage lists them). A cell's key is its chart label: `megl` for
    the default grid of one dataset and one backbone (`dvc exp show` column `megl.accuracy`, the same in an experiment on another
    dataset, so the two compare in one column), prefixed by the dataset and the backbone where the grid
    has several (`object_me_varied.megl`)."""
    keys = grid_runs(datasets, backbones, variants, seeds)
    several = {"dataset": len(datasets) > 1, "backbone": len(backbones) > 1, "seed": len(seeds) > 1}
    cell_several = {**several, "seed": False}
    paths = [dataset_report(root, d) for d in reports]
    gated = {p.relative_to(root).as_posix(): data for p in paths if (data := _load(p)) is not None}
    found: dict[tuple, list[dict]] = {}
    history: list[dict] = []
    for key in keys:
        lay = run_layout(root, key)
        if (test := _load(lay.test_metrics)) is not None:
            found.setdefault((key.dataset, key.backbone, key.variant), []).append(test)
            gated[lay.relative(lay.test_metrics)] = test
        train = _load(lay.train_metrics) or {}
        history += [{"run": run_label(key, several), "epoch": row["epoch"], "val_accuracy": row["val_accuracy"]}
                    for row in train.get("history", []) if _number(row.get("val_accuracy"))]
    metrics: dict[str, object] = {"seeds": len(seeds)}
    bars: dict[str, list[dict]] = {"accuracy": [], "miou": []}
    for (d, b, v), runs in found.items():
        cell: dict[str, float] = {} if len(runs) == len(seeds) else {"seeds": len(runs)}
        for name in HEADLINE:
            values = [m[name] for m in runs if _number(m.get(name))]
            if len(values) == len(runs):  # a mean over fewer seeds than the cell has would mislead
                cell[name] = _mean(values)
        method = run_label(RunKey(d, b, v, 0), cell_several)
        *outer, last = method.split("/")
        node = metrics
        for part in outer:
            node = node.setdefault(part, {})
        node[last] = cell
        bars["accuracy"] += [{"method": method, "accuracy": cell["accuracy"]}] if "accuracy" in cell else []
        bars["miou"] += [{"method": method, "miou": cell["miou"]}] if "miou" in cell else []
    return {"metrics": metrics, "runs": gated, "history": history, **bars}


def dump(value) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=False) + "\n").encode()
