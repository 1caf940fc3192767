"""The study command end to end (pipeline/study.py) in a git + DVC copy of the repository with tiny
params: a bounded call records part of the search and stops; the next resumes, selects on validation
and runs the final seeds; a third has nothing to do; after a commit that changes no number the
records are reused (shown by running one per method again), after one that does they are not. Trial values are the seeded draws; the
workspace's own outputs are untouched."""

import json
import subprocess
import sys

import pytest
import yaml

from sweep_support import VENV_BIN, digest, git, tiny_repo

pytestmark = pytest.mark.slow

STUDY = {
    "train": {"checkpoint": "last"},
    "study": {"name": "tiny", "datasets": ["object_me"], "backbones": ["resnet18"], "variants": ["baseline", "gradia"],
              "baseline": "baseline", "search_seed": 0, "trials": 2, "final_seeds": [1],
              "selection": {"metric": "accuracy", "tolerance": 0.01, "tie_break": "miou"}},
}


def study(work, *args, file="configs/study.yaml"):
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(work), "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run([sys.executable, "pipeline/study.py", file, *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=1200)


def records(work, name="tiny"):
    path = work / "studies" / name / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def study_repo(tmp_path):
    """The tiny repository with configs/study.yaml, committed (a study runs the commit)."""
    work = tiny_repo(tmp_path / "repo")
    (work / "configs").mkdir()
    (work / "configs" / "study.yaml").write_text(yaml.safe_dump(STUDY))
    git(work, "add", "-A")
    git(work, "commit", "-qm", "study")
    return work


def test_study_resumes_selects_on_validation_and_reports(tmp_path):
    work = study_repo(tmp_path)
    before = digest(work)

    first = study(work, "--max-runs", "3")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert len(records(work)) == 3 and "search not complete" in first.stdout
    assert not (work / "studies" / "tiny" / "selection.json").exists()

    second = study(work)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    found = records(work)
    assert [r["phase"] for r in found] == ["search"] * 4 + ["final"] * 2
    assert len({r["run"] for r in found if r["phase"] == "search"}) == 4  # each trial once: the resume ran the 4th only

    # trial values are the seeded draws of each method's space
    sys.path.insert(0, str(work / "src"))
    from megl import methods
    from megl.config import VariantConfig
    from megl.study.sampling import draw

    for r in found:
        if r["phase"] == "search":
            v = VariantConfig() if r["method"] == "baseline" else VariantConfig(method="gradia")
            assert r["hyperparameters"] == draw(methods.get(v.method).search_space(v), 0, v.method, r["trial"])
            assert set(r["val"]) >= {"accuracy", "f1", "val_samples"} and "accuracy" in r["test"]
            assert r["train"]["epochs"] == 1 and r["train"]["exported_epoch"] == r["train"]["best_val_epoch"] == 0
    chosen = json.loads((work / "studies" / "tiny" / "selection.json").read_text())["object_me"]["resnet18"]
    finals = {r["method"]: r for r in found if r["phase"] == "final"}
    for method in ("baseline", "gradia"):
        assert finals[method]["variant"] == chosen[method]["trial_variant"] and finals[method]["seed"] == 1
        assert finals[method]["hyperparameters"] == chosen[method]["hyperparameters"]
    report = (work / "studies" / "tiny" / "report.md").read_text()
    assert "| GRADIA | gradia_t0" in report and "Selection (declared before the runs)" in report
    assert (work / "studies" / "tiny" / "object_me-resnet18.png").stat().st_size > 1000
    bars = (work / "studies" / "tiny" / "plots" / "object_me-resnet18-accuracy.csv").read_text().splitlines()
    assert bars[0] == "method,mean,ci_low,ci_high,seeds" and len(bars) == 3  # what `dvc plots show` draws

    third = study(work)
    assert third.returncode == 0 and "0 to run now" in third.stdout
    assert len(records(work)) == 6
    assert digest(work) == before  # the workspace's outputs: untouched (the study writes studies/)
    assert git(work, "status", "--porcelain", "--", "dvc.lock", "params.yaml", "metrics") == ""
    assert git(work, "status", "--porcelain", "--", "studies").strip() == "?? studies/"  # to be committed as it goes

    # an ablation at the study's selection: each arm at GRADIA's selected values, paired with GRADIA itself
    ablation = {"extends": "configs/study.yaml", "variants": {"gradia_best": {"method": "gradia", "train": {"checkpoint": "best_val"}}},
                "study": dict(STUDY["study"], name="tiny-ablation", variants=["gradia", "gradia_best"], baseline="gradia",
                              trials=0, hyperparameters_from={"study": "tiny", "variant": "gradia"})}
    (work / "configs" / "ablation.yaml").write_text(yaml.safe_dump(ablation))
    git(work, "add", "configs/ablation.yaml")
    git(work, "commit", "-qm", "ablation")
    out = study(work, file="configs/ablation.yaml")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    arms = {r["method"]: r for r in records(work, "tiny-ablation")}
    assert set(arms) == {"gradia", "gradia_best"} and {r["phase"] for r in arms.values()} == {"final"}
    trial = chosen["gradia"]["trial"]
    assert arms["gradia"]["variant"] == f"gradia_t{trial:02d}" and arms["gradia_best"]["variant"] == f"gradia_best_t{trial:02d}"
    assert all(r["hyperparameters"] == chosen["gradia"]["hyperparameters"] for r in arms.values())
    assert arms["gradia"]["test"] == finals["gradia"]["test"]  # the same run as the study's: the same numbers
    assert "No search: every arm at the values study `tiny` selected for `gradia`" in \
        (work / "studies" / "tiny-ablation" / "report.md").read_text()
    assert "extends:" not in (work / "studies" / "tiny-ablation" / "study.yaml").read_text()

    # a commit that leaves the numbers alone: one record per method runs again, the records are reused
    losses = work / "src" / "megl" / "losses.py"
    losses.write_text(losses.read_text() + "\n# a comment\n")
    git(work, "commit", "-qam", "a comment")
    fourth = study(work)
    assert fourth.returncode == 0, fourth.stdout[-3000:] + fourth.stderr[-3000:]
    assert "the same numbers at this commit: its 6 records are reused" in fourth.stdout and "0 to run now" in fourth.stdout
    checks = [json.loads(line) for line in (work / "studies" / "tiny" / "code.jsonl").read_text().splitlines()]
    assert checks[-1]["identical"] and len(checks[-1]["runs"]) == 2 and len(records(work)) == 6

    # a commit that changes them: the older records are not reused, the study starts again
    train = work / "src" / "megl" / "train.py"
    train.write_text(train.read_text().replace("model.param_groups(cfg.lr,", "model.param_groups(cfg.lr * 10,"))
    git(work, "commit", "-qam", "ten times the lr")
    fifth = study(work, "--max-runs", "0")
    assert fifth.returncode == 0, fifth.stdout[-3000:] + fifth.stderr[-3000:]
    assert "gives other numbers at this commit" in fifth.stdout and "search: 0 of 4 runs recorded" in fifth.stdout
    checks = [json.loads(line) for line in (work / "studies" / "tiny" / "code.jsonl").read_text().splitlines()]
    assert not checks[-1]["identical"] and len(checks[-1]["runs"]) == 1 and "test" in checks[-1]["differs"]


def test_uncommitted_code_and_a_bad_study_file_are_refused(tmp_path):
    work = study_repo(tmp_path)
    (work / "src" / "megl" / "losses.py").write_text((work / "src" / "megl" / "losses.py").read_text() + "\n# edited\n")
    out = study(work)
    assert out.returncode != 0 and "code changes that are not committed (src/megl/losses.py)" in out.stderr
    bad = dict(STUDY, study=dict(STUDY["study"], final_seeds=[0]))
    git(work, "checkout", "--", "src")
    (work / "configs" / "study.yaml").write_text(yaml.safe_dump(bad))
    out = study(work)
    assert out.returncode != 0 and "configs/study.yaml over params.yaml" in out.stderr and "final_seeds" in out.stderr


def test_the_study_deployment_runs_its_runs_on_the_work_pool(ablation_sweep):
    """`prefect deployment run megl-study/fair`: every run of the study a megl-cell flow run on the
    pool's queue of the commit, restored from the run-cache into the records; the same records as
    the command writes. The sweep fixture's checkout gets the study file as one more commit, and goes
    back to its own commit afterwards (the other modules share it)."""
    from sweep_support import stop

    sweep = ablation_sweep
    work = sweep.work
    before = git(work, "rev-parse", "HEAD").strip()
    study = dict(STUDY, study=dict(STUDY["study"], name="pool", variants=["baseline", "gradia"], trials=1))
    (work / "configs").mkdir(exist_ok=True)
    (work / "configs" / "study.yaml").write_text(yaml.safe_dump(study))
    git(work, "add", "configs/study.yaml")
    git(work, "commit", "-qm", "study")
    stop(sweep.serve)
    try:
        sweep.start_serve()  # its worker serves the new commit's queue
        cmd = [str(VENV_BIN / "prefect"), "deployment", "run", "megl-study/fair", "--watch", "--watch-timeout", "900"]
        out = subprocess.run(cmd, cwd=work, env=sweep.env, capture_output=True, text=True, timeout=960)
        import re

        run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout).group(1)
        state = sweep.flow_run(run_id)["state"]  # its message names each failed run and why
        assert state["type"] == "COMPLETED", str(state["message"]) + out.stdout[-3000:] + out.stderr[-3000:]
        commit = git(work, "rev-parse", "HEAD").strip()
        cells = sweep.cell_runs(run_id)
        found = [json.loads(line) for line in (work / "studies" / "pool" / "runs.jsonl").read_text().splitlines()]
        assert [r["phase"] for r in found] == ["search", "search", "final", "final"]
        assert sorted(c["name"] for c in cells) == sorted(r["run"] for r in found)
        assert all(c["state_type"] == "COMPLETED" and c["work_queue_name"] == f"commit-{commit[:12]}" for c in cells)
        assert all(r["restored"] and r["commit"] == commit and "accuracy" in r["val"] for r in found)
        report = (work / "studies" / "pool" / "report.md").read_text()
        from sweep_support import http_json

        (artifact,) = http_json(f"{sweep.api}/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}})
        assert artifact["key"] == "megl-study-report" and artifact["data"] == report  # in the UI's Artifacts tab
    finally:
        stop(sweep.serve)
        git(work, "reset", "-q", "--hard", before)
        git(work, "clean", "-fdq", "studies")
        sweep.start_serve()
