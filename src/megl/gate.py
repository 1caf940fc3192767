"""The regression gate: freshly reproduced metrics against the committed ones.

`dvc metrics diff HEAD --json --all` gives old (HEAD) and new (working tree) values; tolerances
(metrics/tolerances.yaml) say per metric name which direction is better and how far it may move
the wrong way. DVC has no threshold of its own, hence this small check.

Same params on the same kind of CPU give byte-identical metrics. On another CPU, float kernels
differ in their last bits and training from scratch amplifies that into a different run, as another
seed would; a metric averaged over n test samples then moves by about its standard error. So a
metric that names its sample count (`samples:` in the tolerances) may move by
max(tolerance, STANDARD_ERRORS x SE), SE = sqrt(p (1 - p) / n) at the committed value p: the exact
standard error of a proportion (accuracy, pointing game) and an upper bound for the mean of
per-sample values in [0, 1] (mIoU, relevance mass, deletion / insertion AUC). A run whose committed
accuracy is not above chance (megl.chance) is noise throughout: only its accuracy is gated (a run
that falls to chance from above does fail on accuracy).
"""

from __future__ import annotations

import dataclasses
import fnmatch
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

    def allowed(self, old: float, n) -> float:
        if self.samples is None or not isinstance(n, (int, float)) or n < 1:
            return self.tolerance
        p = min(max(float(old), 0.0), 1.0)
        return max(self.tolerance, self.standard_errors * math.sqrt(p * (1 - p) / n))


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


def load_tolerances(path: Path) -> tuple[list[str], dict[str, Rule]]:
    """(file globs the gate covers, metric name -> rule)."""
    raw = yaml.safe_load(Path(path).read_text())
    z = float(raw.get("standard_errors", 0.0))
    rules = {}
    for name, spec in raw["metrics"].items():
        if spec.get("direction") not in ("higher", "lower") or not isinstance(spec.get("tolerance"), (int, float)):
            raise ValueError(f"{path}: metrics.{name} needs direction: higher|lower and a numeric tolerance")
        rules[name] = Rule(spec["direction"] == "higher", float(spec["tolerance"]), spec.get("samples"), z)
    return list(raw["files"]), rules


def _at_chance(metrics: dict) -> bool:
    """The committed run's accuracy is not above chance (its test.json has the counts)."""
    old = {k: v.get("old") for k, v in metrics.items()}
    if not all(isinstance(old.get(k), (int, float)) for k in ("accuracy", "test_samples", "chance_accuracy")):
        return False
    n = int(old["test_samples"])
    return not above_chance(round(old["accuracy"] * n), n, old["chance_accuracy"])


def check(diff: dict, files: list[str], rules: dict[str, Rule]) -> list[Finding]:
    """Judge every gated metric in a `dvc metrics diff --json --all` result."""
    findings = []
    for file, metrics in sorted(diff.get("diff", diff).items()):
        if not any(fnmatch.fnmatch(file, pattern) for pattern in files):
            continue
        noise = _at_chance(metrics)
        for name, values in sorted(metrics.items()):
            rule = rules.get(name.split(".")[-1])
            old, new = values.get("old"), values.get("new")
            if rule is None or not isinstance(old, (int, float)) or isinstance(old, bool):
                continue
            if noise and name != "accuracy":
                continue
            if not isinstance(new, (int, float)):
                findings.append(Finding(file, name, "missing", old, None))
                continue
            n = metrics.get(rule.samples, {}).get("old") if rule.samples else None
            tolerance = round(rule.allowed(old, n), 6)
            worse = (old - new) if rule.higher_is_better else (new - old)
            kind = "regressed" if worse > tolerance + 1e-12 else "improved" if worse < 0 else "ok"
            findings.append(Finding(file, name, kind, old, new, tolerance))
    return findings


def report(findings: list[Finding]) -> tuple[str, bool]:
    bad = [f for f in findings if f.kind in ("regressed", "missing")]
    lines = [f.line() for f in bad] + [f.line() for f in findings if f.kind == "improved"]
    summary = f"regression gate: {len(findings)} metrics checked, {len(bad)} regressed or missing"
    return "\n".join([summary, *lines]) + "\n", not bad
