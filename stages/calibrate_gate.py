"""Measure the model spread the regression gate allows (metrics/model_spread.json).

Two runs of the grid that differ only in the seed (`grid.seeds: [0]` here, `[1]` in a copy of the
repository) differ as much as a rerun on another CPU can: training turns any last-bit difference
into another model. Per dataset and backbone, the spread of a metric is the root mean square of
the two seeds' difference over the variants (runs at chance count for accuracy only, as in the
gate). Usage, after both grids ran:

    python stages/calibrate_gate.py --b /path/to/copy/metrics --seed-b 1
"""

from __future__ import annotations

import argparse
import collections
import json
import math
from pathlib import Path

from megl.atomic import write_json
from megl.chance import runs_above_chance

# Metrics of a run's test.json that the gate compares (the rest are counts, names and statuses).
SKIP = {"test_samples", "localisation_samples", "faithfulness_samples", "text_samples", "chance_accuracy", "seed", "num_classes"}


def _runs(root: Path, seed: int) -> dict[tuple[str, str, str], dict]:
    return {
        (p.parts[-5], p.parts[-4], p.parts[-3]): json.loads(p.read_text())
        for p in sorted(root.glob(f"*/*/*/s{seed}/test.json"))
    }


def spreads(a: dict, b: dict) -> tuple[dict, int]:
    diffs: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    pairs = 0
    for key in sorted(set(a) & set(b)):
        pairs += 1
        group = f"{key[0]}/{key[1]}"
        noise = not (runs_above_chance([a[key]]) and runs_above_chance([b[key]]))
        for metric, old in a[key].items():
            new = b[key].get(metric)
            if metric in SKIP or isinstance(old, bool) or not isinstance(old, (int, float)) or not isinstance(new, (int, float)):
                continue
            if noise and metric != "accuracy":
                continue
            diffs[group][metric].append(float(old) - float(new))
    out = {
        group: {m: round(math.sqrt(sum(d * d for d in v) / len(v)), 6) for m, v in sorted(metrics.items())}
        for group, metrics in sorted(diffs.items())
    }
    return out, pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, default=Path("metrics"), help="metrics folder of the first grid")
    parser.add_argument("--seed-a", type=int, default=0)
    parser.add_argument("--b", type=Path, required=True, help="metrics folder of the second grid")
    parser.add_argument("--seed-b", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("metrics/model_spread.json"))
    args = parser.parse_args()
    groups, pairs = spreads(_runs(args.a, args.seed_a), _runs(args.b, args.seed_b))
    if not pairs:
        raise SystemExit(f"calibrate_gate: no run has test.json under both {args.a} (s{args.seed_a}) and {args.b} (s{args.seed_b})")
    write_json(args.out, {
        "method": f"RMS over variants of test metric differences, seed {args.seed_a} vs seed {args.seed_b}",
        "pairs": pairs,
        "groups": groups,
    })
    print(json.dumps({"out": str(args.out), "pairs": pairs, "groups": sorted(groups)}))


if __name__ == "__main__":
    main()
