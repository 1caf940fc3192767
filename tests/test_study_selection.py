"""The declared selection rule (megl.study.selection), and that the study's selection reads no test
metric: poisoning every test metric of the search records leaves the choice unchanged."""

import copy
import math
import sys

import pytest

from conftest import REPO
from megl.study.selection import Trial, select

sys.path.insert(0, str(REPO / "pipeline"))


def trial(k, acc, miou=None):
    return Trial(f"m_t{k:02d}", k, {"train.lr": 0.001 * (k + 1)}, {"accuracy": acc} | ({"miou": miou} if miou is not None else {}))


def test_best_metric_wins_when_alone():
    c = select([trial(0, 0.80, 0.9), trial(1, 0.95, 0.1), trial(2, 0.90, 0.5)], "accuracy", 0.01, "miou")
    assert c.trial.trial == 1 and c.tied == ("m_t01",) and "best accuracy 0.9500" in c.reason


def test_ties_within_tolerance_go_to_the_tie_break():
    # every trial near 1.0 on validation (the shortcut works there too): alignment decides
    trials = [trial(0, 0.995, 0.20), trial(1, 1.0, 0.10), trial(2, 0.992, 0.60), trial(3, 0.95, 0.99)]
    c = select(trials, "accuracy", 0.01, "miou")
    assert c.trial.trial == 2 and c.tied == ("m_t00", "m_t01", "m_t02") and "highest miou 0.6000" in c.reason


def test_remaining_ties_go_to_the_lowest_trial_and_diverged_runs_are_counted():
    trials = [trial(3, 0.9, 0.5), trial(1, 0.9, 0.5), trial(2, math.nan, 0.9), Trial("m_t04", 4, {}, {})]
    c = select(trials, "accuracy", 0.0, "miou")
    assert c.trial.trial == 1 and c.excluded == ("m_t02", "m_t04")
    none = select([trial(0, 0.9), trial(1, 0.9)], "accuracy", 0.01, "miou")
    assert none.trial.trial == 0 and "lowest trial number" in none.reason
    assert select([Trial("x", 0, {}, {})], "accuracy", 0.01, None).trial is None


def _records():
    records = []
    for method in ("baseline", "megl"):
        for k in range(4):
            records.append({"phase": "search", "dataset": "object_me", "backbone": "resnet18", "method": method,
                            "variant": f"{method}_t{k:02d}", "trial": k, "seed": 0, "hyperparameters": {"train.lr": k / 10},
                            "val": {"accuracy": [0.99, 1.0, 0.97, 0.995][k], "miou": [0.1, 0.2, 0.9, 0.3][k]},
                            "test": {"accuracy": [0.2, 0.3, 0.4, 0.5][k], "miou": [0.5, 0.1, 0.1, 0.1][k]}})
    return records


def test_selection_never_reads_test_metrics():
    import study
    from megl.config import SelectionConfig, StudyConfig

    params = type("P", (), {"study": StudyConfig("s", ("object_me",), ("resnet18",), ("baseline", "megl"), "baseline",
                                                 0, 4, (1, 2), SelectionConfig())})()
    clean = study.selection(params, _records())
    poisoned = copy.deepcopy(_records())
    for r in poisoned:
        r["test"] = {k: (1e9 if r["trial"] == 2 else -1e9) for k in r["test"]} | {"accuracy": float("nan")}
    assert study.selection(params, poisoned) == clean
    chosen = clean["object_me"]["resnet18"]["megl"]
    # val accuracy 0.99, 1.0, 0.995 tie within 0.01 (0.97 does not); highest val mIoU among them: trial 3
    assert chosen["trial_variant"] == "megl_t03" and chosen["tied"] == ["megl_t00", "megl_t01", "megl_t03"]


def test_study_config_refuses_the_search_seed_among_the_final_seeds(tmp_path):
    import yaml

    from megl.config import ConfigError, load_params

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["study"] = {"name": "s", "datasets": ["object_me_varied"], "backbones": ["resnet18"], "variants": ["baseline"],
                    "baseline": "baseline", "search_seed": 0, "trials": 2, "final_seeds": [0, 1]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="study.final_seeds: .* none equal to search_seed 0"):
        load_params(tmp_path / "params.yaml")
    raw["study"] |= {"final_seeds": [1], "variants": ["baseline", "nope"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"study.variants: \['nope'\] not defined"):
        load_params(tmp_path / "params.yaml")


def test_a_diverged_trial_is_recorded_and_any_other_failure_stops_the_study(monkeypatch, tmp_path):
    import scratch
    import study
    from megl.layout import RunKey

    key = RunKey("object_me", "resnet18", "cdep_t03", 0)

    def diverges(*args, **kwargs):
        raise scratch.ScratchError("dvc repro exited with 1:\ntrain: object_me/resnet18/cdep_t03: loss term 'cdep' is nan "
                                   "at epoch 2, step 7 (global step 250)\nERROR: failed to reproduce")

    monkeypatch.setattr(scratch, "run_logged", diverges)
    record = study.run_one(tmp_path, key, {}, lambda line: None)
    assert record["val"] == {} and record["diverged"].startswith("loss term 'cdep' is nan at epoch 2")
    choice = select([Trial("cdep_t03", 3, {}, record["val"]), trial(1, 0.5)], "accuracy", 0.01, "miou")
    assert choice.trial.trial == 1 and choice.excluded == ("cdep_t03",)

    def killed(*args, **kwargs):
        raise scratch.ScratchError("dvc repro exited with -9:\n")

    monkeypatch.setattr(scratch, "run_logged", killed)
    with pytest.raises(scratch.ScratchError):
        study.run_one(tmp_path, key, {}, lambda line: None)
