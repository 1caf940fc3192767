"""The regression gate: freshly reproduced metrics against the committed ones.

`dvc metrics diff HEAD --json --all` gives old (HEAD) and new (working tree) values; tolerances
(metrics/tolerances.yaml) say per metric name which direction is better and how far it may move
the wrong way. DVC has no threshold of its own, hence this small check.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from pathlib import Path

import yaml


@dataclasses.dataclass(frozen=True)
class Rule:
    higher_is_better: bool
    tolerance: float


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
    rules = {}
    for name, spec in raw["metrics"].items():
        if spec.get("direction") not in ("higher", "lower") or not isinstance(spec.get("tolerance"), (int, float)):
            raise ValueError(f"{path}: metrics.{name} needs direction: higher|lower and a numeric tolerance")
        rules[name] = Rule(spec["direction"] == "higher", float(spec["tolerance"]))
    return list(raw["files"]), rules


def check(diff: dict, files: list[str], rules: dict[str, Rule]) -> list[Finding]:
    """Judge every gated metric in a `dvc metrics diff --json --all` result."""
    findings = []
    for file, metrics in sorted(diff.get("diff", diff).items()):
        if not any(fnmatch.fnmatch(file, pattern) for pattern in files):
            continue
        for name, values in sorted(metrics.items()):
            rule = rules.get(name.split(".")[-1])
            old, new = values.get("old"), values.get("new")
            if rule is None or not isinstance(old, (int, float)) or isinstance(old, bool):
                continue
            if not isinstance(new, (int, float)):
                findings.append(Finding(file, name, "missing", old, None))
                continue
            worse = (old - new) if rule.higher_is_better else (new - old)
            kind = "regressed" if worse > rule.tolerance + 1e-12 else "improved" if worse < 0 else "ok"
            findings.append(Finding(file, name, kind, old, new, rule.tolerance))
    return findings


def report(findings: list[Finding]) -> tuple[str, bool]:
    bad = [f for f in findings if f.kind in ("regressed", "missing")]
    lines = [f.line() for f in bad] + [f.line() for f in findings if f.kind == "improved"]
    summary = f"regression gate: {len(findings)} metrics checked, {len(bad)} regressed or missing"
    return "\n".join([summary, *lines]) + "\n", not bad
