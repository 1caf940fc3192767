"""The regression gate against a real git HEAD: a planted drop fails, noise passes, a missing metric is named."""

import json
import os
import subprocess
import sys

import pytest

from megl.gate import Rule, Tolerances, check, compare, report

RULES = {"accuracy": Rule(True, 0.02), "deletion_auc": Rule(False, 0.02), "cider": Rule(True, 0.1)}
FILES = ["metrics/*/*/megl.json"]
GATE = Tolerances(FILES, RULES)


def diff(**metrics):
    return {"metrics/d/b/megl.json": {k: {"old": o, "new": n} for k, (o, n) in metrics.items()}}


def test_check_directions_and_tolerances():
    findings = check(diff(accuracy=(0.9, 0.85), deletion_auc=(0.2, 0.21), cider=(1.0, 1.3)), GATE)
    kinds = {f.metric: f.kind for f in findings}
    assert kinds == {"accuracy": "regressed", "deletion_auc": "ok", "cider": "improved"}
    text, ok = report(findings)
    assert not ok and "REGRESSED metrics/d/b/megl.json: accuracy 0.9 -> 0.85" in text
    assert check(diff(deletion_auc=(0.2, 0.25)), GATE)[0].kind == "regressed"  # lower is better


def test_tolerance_grows_to_the_standard_error_of_small_samples():
    """A metric averaged over n samples may move by 2 standard errors, sqrt(p (1 - p) / n), when that
    is more than its absolute tolerance: one run cannot tell a smaller change from another CPU's
    (or another seed's) run."""
    rules = {"pointing_game": Rule(True, 0.03, "localisation_samples", 2.0), "accuracy": Rule(True, 0.02, "test_samples", 2.0)}
    files = ["metrics/*/*/megl.json"]

    def judge(metric, old, new, n, count):
        d = {"metrics/d/b/megl.json": {metric: {"old": old, "new": new}, count: {"old": n, "new": n}}}
        (finding,) = check(d, Tolerances(files, rules))
        return finding

    # pointing game over 50 maps: SE(0.5) = 0.0707, tolerance 0.1414
    assert judge("pointing_game", 0.5, 0.4, 50, "localisation_samples").kind == "ok"
    found = judge("pointing_game", 0.5, 0.34, 50, "localisation_samples")
    assert found.kind == "regressed" and found.tolerance == 0.141421
    # accuracy over 5,000 samples: 2 SE(0.9) = 0.0085 < 0.02, the absolute tolerance stays
    assert judge("accuracy", 0.9, 0.885, 5000, "test_samples").kind == "ok"
    assert judge("accuracy", 0.9, 0.875, 5000, "test_samples").tolerance == 0.02
    # without its count in the file, the absolute tolerance
    (plain,) = check({"metrics/d/b/megl.json": {"accuracy": {"old": 0.9, "new": 0.87}}}, Tolerances(files, rules))
    assert plain.kind == "regressed" and plain.tolerance == 0.02


def test_a_run_at_chance_gates_only_its_accuracy():
    """Committed accuracy 0.09 on 600 samples with a majority class of 0.10: everything but accuracy
    is noise; accuracy is still gated."""
    rules = {"accuracy": Rule(True, 0.02), "miou": Rule(True, 0.02)}
    counts = {"test_samples": {"old": 600, "new": 600}, "chance_accuracy": {"old": 0.1, "new": 0.1}}
    d = {"metrics/d/b/megl.json": {"accuracy": {"old": 0.09, "new": 0.085}, "miou": {"old": 0.3, "new": 0.1}} | counts}
    assert [(f.metric, f.kind) for f in check(d, Tolerances(["metrics/*/*/megl.json"], rules))] == [("accuracy", "ok")]
    above = {"metrics/d/b/megl.json": {"accuracy": {"old": 0.5, "new": 0.5}, "miou": {"old": 0.3, "new": 0.1}} | counts}
    assert {f.metric: f.kind for f in check(above, Tolerances(["metrics/*/*/megl.json"], rules))}["miou"] == "regressed"


def test_tolerance_grows_to_the_model_spread_of_its_run_group():
    """A metric may move by z x the seed-to-seed RMS of its dataset/backbone: a CAM that slides off
    the target moves every sample at once, beyond the sampling SE."""
    rules = {"pointing_game": Rule(True, 0.03, "localisation_samples", 2.0, spread_z=3.0)}
    spreads = {"object_me/vit_b16": {"pointing_game": 0.1}}
    gate = Tolerances(["metrics/*/*/*/s*/test.json"], rules, spreads)

    def judge(file, old, new):
        d = {file: {"pointing_game": {"old": old, "new": new}, "localisation_samples": {"old": 50, "new": 50}}}
        (finding,) = check(d, gate)
        return finding

    vit, resnet = "metrics/object_me/vit_b16/baseline/s0/test.json", "metrics/object_me/resnet18/baseline/s0/test.json"
    assert judge(vit, 0.78, 0.50).kind == "ok" and judge(vit, 0.78, 0.50).tolerance == 0.3
    assert judge(vit, 0.78, 0.47).kind == "regressed"
    # another group has no spread: two standard errors of 50 samples at 0.78 (0.117167)
    assert judge(resnet, 0.78, 0.65).kind == "regressed" and judge(resnet, 0.78, 0.65).tolerance == 0.117167


def test_calibration_writes_the_rms_seed_difference(tmp_path):
    """stages/calibrate_gate.py over two metrics folders: RMS over variants per dataset/backbone,
    runs at chance count for accuracy only."""
    def write(root, seed, variant, **m):
        path = root / "d" / "b" / variant / f"s{seed}" / "test.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"test_samples": 100, "chance_accuracy": 0.1, **m}))

    a, b = tmp_path / "a", tmp_path / "b"
    write(a, 0, "megl", accuracy=0.8, miou=0.5)
    write(b, 1, "megl", accuracy=0.7, miou=0.3)
    write(a, 0, "visual", accuracy=0.6, miou=0.4)
    write(b, 1, "visual", accuracy=0.5, miou=0.4)
    write(a, 0, "text", accuracy=0.1, miou=0.9)  # at chance: its miou is noise
    write(b, 1, "text", accuracy=0.12, miou=0.0)
    out = tmp_path / "spread.json"
    script = os.path.join(os.path.dirname(__file__), "..", "stages", "calibrate_gate.py")
    done = subprocess.run([sys.executable, script, "--a", str(a), "--b", str(b), "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    spread = json.loads(out.read_text())
    assert spread["pairs"] == 3
    assert spread["groups"]["d/b"]["miou"] == 0.141421  # sqrt((0.2^2 + 0^2) / 2)
    assert spread["groups"]["d/b"]["accuracy"] == round(((0.01 + 0.01 + 0.0004) / 3) ** 0.5, 6)


def test_ungated_files_and_metrics_are_ignored():
    d = diff(accuracy=(0.9, 0.1), latency_ms=(1.0, 9.0))
    assert check(d, Tolerances(["metrics/*/*/baseline.json"], RULES)) == []
    assert [f.metric for f in check(d, GATE)] == ["accuracy"]


@pytest.fixture
def repo_with_metrics(tmp_path):
    """A git repository whose HEAD commits summary/runs.json, as the summary stage writes it."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    run = lambda *a: subprocess.run(a, cwd=tmp_path, env=env, check=True, capture_output=True)  # noqa: E731
    run("git", "init", "-q")
    (tmp_path / "summary").mkdir()
    runs = tmp_path / "summary" / "runs.json"
    runs.write_text(json.dumps({"metrics/d/b/megl.json": {"accuracy": 0.9, "miou": 0.4, "cider": 1.0}}))
    (tmp_path / "tolerances.yaml").write_text(
        "files: ['metrics/*/*/megl.json']\nmetrics:\n"
        "  accuracy: {direction: higher, tolerance: 0.02}\n  miou: {direction: higher, tolerance: 0.02}\n"
        "  cider: {direction: higher, tolerance: 0.1}\n"
    )
    run("git", "add", "-A")
    run("git", "commit", "-qm", "metrics")

    def gate(new: dict):
        runs.write_text(json.dumps({"metrics/d/b/megl.json": new}))
        script = os.path.join(os.path.dirname(__file__), "..", "stages", "check_regression.py")
        return subprocess.run([sys.executable, script, "--tolerances", "tolerances.yaml"], cwd=tmp_path, env=env,
                              capture_output=True, text=True)

    return gate


def test_gate_against_the_committed_collection(repo_with_metrics):
    gate = repo_with_metrics
    same = gate({"accuracy": 0.9, "miou": 0.4, "cider": 1.0})
    assert same.returncode == 0 and "3 metrics checked, 0 regressed" in same.stdout

    noise = gate({"accuracy": 0.89, "miou": 0.395, "cider": 0.95})
    assert noise.returncode == 0, noise.stdout

    drop = gate({"accuracy": 0.80, "miou": 0.4, "cider": 1.0})
    assert drop.returncode == 1
    assert "REGRESSED metrics/d/b/megl.json: accuracy 0.9 -> 0.8" in drop.stdout

    missing = gate({"accuracy": 0.9, "cider": 1.0})
    assert missing.returncode == 1
    assert "MISSING   metrics/d/b/megl.json: miou was 0.4, now absent" in missing.stdout

    gone = gate({})  # a run whose test metrics the reproduction lost entirely
    assert gone.returncode == 1 and gone.stdout.count("MISSING") == 3


def test_compare_pairs_nested_metrics_by_dotted_names_like_dvc():
    old = {"metrics/d/b/megl.json": {"accuracy": 0.9, "per_class": {"cat": 0.5}}, "metrics/d/b/gone.json": {"accuracy": 0.7}}
    new = {"metrics/d/b/megl.json": {"accuracy": 0.8, "per_class": {"cat": 0.6}, "extra": 1}}
    assert compare(old, new) == {
        "metrics/d/b/gone.json": {"accuracy": {"old": 0.7, "new": None}},
        "metrics/d/b/megl.json": {"accuracy": {"old": 0.9, "new": 0.8}, "extra": {"old": None, "new": 1},
                                  "per_class.cat": {"old": 0.5, "new": 0.6}},
    }
