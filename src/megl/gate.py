"""The regression gate: freshly reproduced metrics against the committed ones.

The gated files (each dataset's extraction report, each run's test metrics) are DVC-cached outputs,
so a clean clone has only their committed copy: summary/runs.json, which the summary stage writes
({path: contents}). `compare` pairs HEAD's copy (old) with the reproduced one (new), metric by metric
(nested keys joined by dots, as `dvc metrics diff` names them); tolerances (metrics/tolerances.yaml)
say per metric name which direction is better and how far it may move the wrong way. DVC has no
threshold of its own, hence this small check.

Same params on the same kind of CPU give byte-identical metrics. On another CPU, float kernels
differ in their last bits and training from scratch amplifies that into a different run, as another
seed would. Two measured spreads bound what such a run may move, and a metric moves too far only
beyond the largest of three allowances:
- `tolerance`: the absolute floor per metric;
- sampling: a metric that names its sample count (`samples:`) may move by `standard_errors` x SE,
  SE = sqrt(p (1 - p) / n) at the committed value p (the exact SE of a proportion: accuracy,
  pointing game; an upper bound for a mean of values in [0, 1]: mIoU, relevance mass, AUCs);
- model spread: `model_spread.z` x the RMS difference between two seeds' runs of the same
  dataset and backbone over the variants (metrics/model_spread.json, stages/calibrate_gate.py).
  Training amplifies a last-bit difference into a different model whose test-sample errors are
  correlated (a CAM that slides off the target moves every sample's pointing game at once), so
  the sampling SE alone underestimates how far a rerun moves.
A run whose committed accuracy is not above chance (megl.chance) is noise throughout: only its
accuracy is gated (a run that falls to chance from above does fail on accuracy).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
from pathlib import Path

import yaml

from megl.chance import above_chance


@dataclasses.dataclass(frozen=True)
class Rule:
    higher_is_better: bool
    tolerance: float
    samples: str | None = None  # the metric in the same file that counts the samples this one averages
    standard_errors: float = 0.0  # with `samples`: the tolerance is at least this many standard errors
    spread_z: float = 0.0  # the tolerance is at least this many model spreads

    def allowed(self, old: float, n=None, spread: float | None = None) -> float:
        allowed = self.tolerance
        if self.samples is not None and isinstance(n, (int, float)) and n >= 1:
            p = min(max(float(old), 0.0), 1.0)
            allowed = max(allowed, self.standard_errors * math.sqrt(p * (1 - p) / n))
        if spread is not None:
            allowed = max(allowed, self.spread_z * spread)
        return allowed


@dataclasses.dataclass(frozen=True)
class Tolerances:
    files: list[str]  # globs of the gated metric files
    rules: dict[str, Rule]  # metric name -> rule
    spreads: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)  # run group -> metric -> RMS

    def spread(self, file: str, metric: str) -> float | None:
        return self.spreads.get(run_group(file), {}).get(metric)


def run_group(file: str) -> str:
    """`<dataset>/<backbone>` of a run's metrics file (metrics/<d>/<b>/<v>/s<seed>/test.json), else ''."""
    parts = Path(file).parts
    return f"{parts[1]}/{parts[2]}" if len(parts) == 6 and parts[0] == "metrics" else ""


@dataclasses.dataclass(frozen=True)
class Finding:
    file: str
    metric: str
    kind: str  # "regressed" | "missing" | "ok" | "improved"
    old: float | None
    new: float | None
    tolerance: float | None = None

    def line(self) -> str:
        if self.kind == "missing":
            return f"MISSING   {self.file}: {self.metric} was {self.old}, now absent"
        delta = self.new - self.old
        return f"{self.kind.upper():9s} {self.file}: {self.metric} {self.old} -> {self.new} ({delta:+.6f}, tolerance {self.tolerance})"


def load_tolerances(path: Path) -> Tolerances:
    """The gate's settings; `model_spread.file` is relative to the tolerances file's repository root
    (the folder above metrics/), as the other paths of the project are."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text())
    z = float(raw.get("standard_errors", 0.0))
    spread_cfg = raw.get("model_spread") or {}
    spread_z = float(spread_cfg.get("z", 0.0))
    rules = {}
    for name, spec in raw["metrics"].items():
        if spec.get("direction") not in ("higher", "lower") or not isinstance(spec.get("tolerance"), (int, float)):
            raise ValueError(f"{path}: metrics.{name} needs direction: higher|lower and a numeric tolerance")
        rules[name] = Rule(spec["direction"] == "higher", float(spec["tolerance"]), spec.get("samples"), z, spread_z)
    spreads = {}
    if spread_cfg.get("file"):
        spread_file = path.resolve().parent.parent / spread_cfg["file"]
        if not spread_file.is_file():
            raise ValueError(f"{path}: model_spread.file {spread_cfg['file']} not found ({spread_file}); "
                             "write it with stages/calibrate_gate.py")
        spreads = json.loads(spread_file.read_text())["groups"]
    return Tolerances(list(raw["files"]), rules, spreads)


def _at_chance(metrics: dict) -> bool:
    """The committed run's accuracy is not above chance (its test.json has the counts)."""
    old = {k: v.get("old") for k, v in metrics.items()}
    if not all(isinstance(old.get(k), (int, float)) for k in ("accuracy", "test_samples", "chance_accuracy")):
        return False
    n = int(old["test_samples"])
    return not above_chance(round(old["accuracy"] * n), n, old["chance_accuracy"])


def _flat(value, prefix: str = "") -> dict:
    if not isinstance(value, dict):
        return {prefix: value}
    out = {}
    for key, item in value.items():
        out.update(_flat(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def compare(old: dict[str, dict], new: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """{file: {metric: {"old": x, "new": y}}} over every file and metric of either collection (a side
    that lacks one has None), the shape of `dvc metrics diff --json --all`."""
    diff = {}
    for file in sorted(set(old) | set(new)):
        a, b = _flat(old.get(file) or {}), _flat(new.get(file) or {})
        diff[file] = {name: {"old": a.get(name), "new": b.get(name)} for name in sorted(set(a) | set(b))}
    return diff


def check(diff: dict, tolerances: Tolerances) -> list[Finding]:
    """Judge every gated metric in a `compare` result."""
    findings = []
    for file, metrics in sorted(diff.items()):
        if not any(fnmatch.fnmatch(file, pattern) for pattern in tolerances.files):
            continue
        noise = _at_chance(metrics)
        for name, values in sorted(metrics.items()):
            rule = tolerances.rules.get(name.split(".")[-1])
            old, new = values.get("old"), values.get("new")
            if rule is None or not isinstance(old, (int, float)) or isinstance(old, bool):
                continue
            if noise and name != "accuracy":
                continue
            if not isinstance(new, (int, float)):
                findings.append(Finding(file, name, "missing", old, None))
                continue
            n = metrics.get(rule.samples, {}).get("old") if rule.samples else None
            tolerance = round(rule.allowed(old, n, tolerances.spread(file, name)), 6)
            worse = (old - new) if rule.higher_is_better else (new - old)
            kind = "regressed" if worse > tolerance + 1e-12 else "improved" if worse < 0 else "ok"
            findings.append(Finding(file, name, kind, old, new, tolerance))
    return findings


def report(findings: list[Finding]) -> tuple[str, bool]:
    bad = [f for f in findings if f.kind in ("regressed", "missing")]
    lines = [f.line() for f in bad] + [f.line() for f in findings if f.kind == "improved"]
    summary = f"regression gate: {len(findings)} metrics checked, {len(bad)} regressed or missing"
    return "\n".join([summary, *lines]) + "\n", not bad
