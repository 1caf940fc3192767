"""megl.dvc_commit: when a stage script run by hand records itself with `dvc commit`, and when not.
(The recording itself, with real DVC and `dvc exp run` after it: tests/test_nothing_lost.py.)"""

import subprocess

from megl.dvc_commit import record_by_hand_run


def dvc_project(root, venv_bin):
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run([str(venv_bin / "dvc"), "init", "-q"], cwd=root, check=True)
    (root / "dvc.yaml").write_text("stages:\n  make:\n    cmd: echo hi > out.txt\n    outs:\n      - out.txt\n")
    (root / "params.yaml").write_text("{}\n")
    return root


def test_not_recorded_when_dvc_runs_it_or_outside_a_project(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_STAGE", "train@x")
    assert record_by_hand_run(tmp_path, tmp_path / "params.yaml", "train@x") == "run by DVC"
    monkeypatch.delenv("DVC_STAGE")
    monkeypatch.setenv("RANK", "1")
    assert record_by_hand_run(tmp_path, tmp_path / "params.yaml", "train@x") == "not the first process"
    monkeypatch.delenv("RANK")
    assert record_by_hand_run(tmp_path, tmp_path / "params.yaml", "train@x") == "not a DVC project"


def test_recorded_for_a_declared_stage_only_with_the_projects_params(tmp_path, venv_bin, monkeypatch):
    monkeypatch.delenv("DVC_STAGE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    root = dvc_project(tmp_path, venv_bin)
    (root / "out.txt").write_text("made by hand\n")
    other = root / "sub" / "params.yaml"
    assert record_by_hand_run(root, other, "make") == f"{other} is not the project's params.yaml"
    assert record_by_hand_run(root, root / "params.yaml", "train@not-in-the-grid").endswith("outside params grid)")
    assert record_by_hand_run(root, root / "params.yaml", "make") == "recorded"
    lock = (root / "dvc.lock").read_text()
    assert "out.txt" in lock and "md5" in lock
    status = subprocess.run([str(venv_bin / "dvc"), "status", "make"], cwd=root, capture_output=True, text=True).stdout
    assert "changed" not in status  # DVC knows the hand-made output
