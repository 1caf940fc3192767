"""The study report's comparisons beyond the baseline (megl.study.report): MEGL against each other
method paired by seed, checked against a hand computation, and the oracle selection (the best
*test* trial of the search), reported apart and never feeding the selection."""

import json
import sys
from pathlib import Path

from conftest import REPO
from megl.study.report import oracle_rows, versus_rows, write_report

sys.path.insert(0, str(REPO / "pipeline"))

OVERLAY = {"study": {"name": "r", "datasets": ["object_me"], "backbones": ["resnet18"],
                     "variants": ["baseline", "megl", "gradia"], "baseline": "baseline", "search_seed": 0,
                     "trials": 2, "final_seeds": [1, 2, 3],
                     "selection": {"metric": "accuracy", "tolerance": 0.01, "tie_break": "miou"}}}


def params():
    import study

    return study.load_study(study.study_params_text((REPO / "params.yaml").read_text(), OVERLAY), Path("test.yaml"))


def record(phase, method, seed, acc, miou, trial=0):
    return {"phase": phase, "dataset": "object_me", "backbone": "resnet18", "method": method, "seed": seed,
            "trial": trial, "variant": f"{method}_t{trial:02d}", "run": f"object_me/resnet18/{method}_t{trial:02d}/s{seed}", "hyperparameters": {"train.lr": 0.001},
            "seconds": 1.0, "val": {"accuracy": 1.0, "miou": 0.1}, "test": {"accuracy": acc, "miou": miou}}


FINALS = [record("final", "megl", s, a, m) for s, a, m in ((1, 0.30, 0.20), (2, 0.34, 0.22), (3, 0.32, 0.27))] + \
         [record("final", "gradia", s, a, m) for s, a, m in ((1, 0.20, 0.20), (2, 0.26, 0.20), (3, 0.21, 0.20))] + \
         [record("final", "baseline", s, 0.1, 0.1) for s in (1, 2, 3)]


def test_megl_against_each_method_is_paired_by_seed():
    rows = versus_rows(params(), FINALS)
    assert [(r["focus"], r["method"]) for r in rows] == [("megl", "gradia")]  # the baseline is the main table's Δ
    acc = rows[0]["accuracy"]
    # differences 0.10, 0.08, 0.11: mean 0.0967, s = 0.015275, t(0.975, 2) = 4.302653 -> half-width 0.037946
    assert abs(acc.mean - 0.096667) < 1e-6 and abs(acc.half_width - 0.037946) < 1e-5 and acc.excludes_zero()
    miou = rows[0]["miou"]  # 0.00, 0.02, 0.07: the interval holds 0
    assert abs(miou.mean - 0.03) < 1e-9 and not miou.excludes_zero()


def test_oracle_is_the_best_test_trial_beside_the_selected_one(tmp_path):
    search = [record("search", "megl", 0, 0.25, 0.2, trial=0), record("search", "megl", 0, 0.40, 0.1, trial=1),
              record("search", "megl", 0, 0.40, 0.1, trial=2)]
    selection = {"object_me": {"resnet18": {"megl": {"trial_variant": "megl_t00", "tied": ["megl_t00"],
                                                      "excluded": [], "reason": "r", "hyperparameters": {}}}}}
    (row,) = oracle_rows(params(), search, selection)
    assert row["oracle"] == "megl_t01" and row["oracle_accuracy"] == 0.40  # ties: the lowest trial
    assert row["selected"] == "megl_t00" and row["selected_accuracy"] == 0.25 and row["trials"] == 3

    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "selection.json").write_text(json.dumps(selection))
    write_report(params(), search + FINALS, folder, protocol_note="test")
    report = (folder / "report.md").read_text()
    assert "Oracle selection, an upper bound and not a result" in report
    assert "| MEGL | megl_t01 | 0.4000 | megl_t00 | 0.2500 | +0.1500 | 3 |" in report
    assert "| GRADIA | **+0.0967 ± 0.0379** | +0.0300 ± " in report
    assert (folder / "versus.csv").read_text().splitlines()[1].startswith("object_me,resnet18,megl,gradia,accuracy,0.096667,")


def test_an_ablation_reports_its_arms_once_selected_and_side_by_side_over_datasets(tmp_path):
    import study

    overlay = {"study": {"name": "a", "datasets": ["object_me", "action_me"], "backbones": ["resnet18"],
                         "variants": ["megl", "visual", "megl_multilayer"], "baseline": "megl", "search_seed": 0,
                         "trials": 0, "final_seeds": [1, 2, 3],
                         "hyperparameters_from": {"study": "fair", "variant": "megl"}}}
    ablation = study.load_study(study.study_params_text((REPO / "params.yaml").read_text(), overlay), Path("a.yaml"))

    def final(dataset, method, seed, acc, miou):
        return record("final", method, seed, acc, miou) | {"dataset": dataset, "run": f"{dataset}/resnet18/{method}_t01/s{seed}"}

    megl = [(1, 0.30, 0.20), (2, 0.34, 0.22), (3, 0.32, 0.27)]
    records = [final(d, "megl", s, a, m) for d in ("object_me", "action_me") for s, a, m in megl]
    # visual: 0.10, 0.08, 0.11 below MEGL on both datasets; its mIoU the same as MEGL's
    records += [final(d, "visual", s, a - dd, m) for d in ("object_me", "action_me")
                for (s, a, m), dd in zip(megl, (0.10, 0.08, 0.11))]
    records += [final("object_me", "megl_multilayer", s, a, m) for s, a, m in megl[:2]]  # two seeds on one dataset
    chosen = {"trial_variant": None, "tied": [], "excluded": [], "hyperparameters": {"train.lr": 0.001},
              "reason": "study fair's selection of megl (megl_t01): best"}
    selection = {d: {"resnet18": {v: chosen | {"trial_variant": f"{v}_t01"} for v in ("megl", "visual", "megl_multilayer")}}
                 for d in ("object_me", "action_me")}
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "selection.json").write_text(json.dumps(selection))
    write_report(ablation, records, folder, protocol_note="test")
    report = (folder / "report.md").read_text()
    assert report.count("| Arm | Hyperparameters | Accuracy | Δ acc | mIoU | Δ mIoU | Seeds |") == 2  # no search, no val columns
    assert report.count("Selection: every arm at study fair's selection of megl (megl_t01): best.") == 2
    across = report.split("## Across datasets")[1]
    accuracy, miou = across.split("**Accuracy**")[1].split("**mIoU**")
    assert "| Visual | **-0.0967 ± 0.0379** | **-0.0967 ± 0.0379** | 0 / 2 |" in accuracy  # below MEGL on both
    assert "| MEGL (multi-layer Â) | +0.0000 ± 0.0000 | - | 0 / 0 |" in accuracy  # not run on Action-ME
    assert "| Visual | +0.0000 ± 0.0000 | +0.0000 ± 0.0000 | 0 / 0 |" in miou
    del selection["action_me"]
    (folder / "selection.json").write_text(json.dumps(selection))
    write_report(ablation, records, folder, protocol_note="test")
    waiting = (folder / "report.md").read_text().split("## Action-ME")[1].split("## Across datasets")[0]
    assert "The arms wait for study `fair`'s selection of `megl` here." in waiting and "Selection" not in waiting
