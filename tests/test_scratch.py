"""pipeline/scratch.py, with real git and DVC: what counts as uncommitted code, the params a cell or a
gather writes (comments kept), and a worktree that shares its clone's cache and remote."""

import os
import subprocess
import sys

import pytest
import yaml

from sweep_support import GIT_ENV, REPO, VENV_BIN, git


@pytest.fixture(scope="module")
def scratch():
    sys.path.insert(0, str(REPO / "pipeline"))
    try:
        import scratch

        yield scratch
    finally:
        sys.path.remove(str(REPO / "pipeline"))


@pytest.fixture
def clone(tmp_path, monkeypatch):
    for name, value in GIT_ENV.items():
        monkeypatch.setenv(name, value)
    work = tmp_path / "clone"
    (work / "src" / "megl").mkdir(parents=True)
    (work / "src" / "megl" / "core.py").write_text("x = 1\n")
    (work / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (work / "dvc.lock").write_text("schema: '2.0'\n")
    (work / "notes.txt").write_text("mine\n")
    git(work, "init", "-q")
    subprocess.run([str(VENV_BIN / "dvc"), "init", "-q"], cwd=work, check=True)
    (work / ".dvc" / "config").write_text((REPO / ".dvc" / "config").read_text())
    git(work, "add", "-A")
    git(work, "commit", "-qm", "c")
    return work


def test_uncommitted_code_ignores_params_outputs_and_stray_files(scratch, clone):
    assert scratch.uncommitted_code(clone) == []
    (clone / "params.yaml").write_text((clone / "params.yaml").read_text() + "\n")
    (clone / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (clone / "metrics").mkdir()
    (clone / "metrics" / "x.json").write_text("{}")
    (clone / "scratchpad.txt").write_text("untracked, not code\n")
    assert scratch.uncommitted_code(clone) == []
    (clone / "src" / "megl" / "core.py").write_text("x = 2\n")
    (clone / "src" / "megl" / "new.py").write_text("")
    git(clone, "mv", "notes.txt", "src/notes.txt")
    assert sorted(scratch.uncommitted_code(clone)) == ["src/megl/core.py", "src/megl/new.py", "src/notes.txt"]


def test_with_grid_keeps_comments_and_narrowed_params_keep_only_the_grids_data(scratch):
    text = (REPO / "params.yaml").read_text()
    changed = scratch.with_grid(text, {"seeds": [0, 1]})
    assert [line for line in changed.splitlines() if line not in text.splitlines()] == ["  seeds: [0, 1]"]
    narrowed = yaml.safe_load(scratch.narrowed_params(text, {"datasets": ["object_me"], "variants": ["megl"]}))
    full = yaml.safe_load(text)
    assert narrowed["grid"]["datasets"] == ["object_me"] and narrowed["grid"]["variants"] == ["megl"]
    assert list(narrowed["datasets"]) == ["object_me"] and list(narrowed["synthetic"]) == ["object_me"]
    for block in ("train", "variants", "backbones", "compute", "text_head", "evaluate"):
        assert narrowed[block] == full[block]  # what the train and evaluate stages read: unchanged


def test_worktree_at_the_commit_shares_the_clones_cache_and_remote(scratch, clone):
    commit = scratch.head_commit(clone)
    (clone / "src" / "megl" / "core.py").write_text("x = 'uncommitted'\n")
    (clone / "weights" / "encoder").mkdir(parents=True)  # ignored by git, converted by `make weights`
    (clone / "weights" / "encoder" / "model.safetensors").write_text("w")
    with scratch.worktree(commit, "grid: {}\n", clone) as tree:
        assert (tree / "weights" / "encoder" / "model.safetensors").read_text() == "w"
        assert tree.parent == clone / ".dvc" / "tmp" / "cells"
        assert (tree / "src" / "megl" / "core.py").read_text() == "x = 1\n"  # the commit, not the checkout
        assert (tree / "params.yaml").read_text() == "grid: {}\n"
        # COLUMNS: DVC wraps its table output at the terminal's width, a long tmp path too
        dvc = lambda *a: subprocess.run([str(VENV_BIN / "dvc"), *a], cwd=tree, capture_output=True, text=True,  # noqa: E731
                                        env={**os.environ, "COLUMNS": "1000"}).stdout
        assert dvc("cache", "dir").strip() == str(clone / ".dvc" / "cache")
        assert dvc("remote", "list").split() == ["storage", str(clone / "dvc-remote"), "(default)"]
    assert not tree.exists() and str(tree) not in git(clone, "worktree", "list")
    assert git(clone, "status", "--porcelain").strip().splitlines() == ["M src/megl/core.py", "?? weights/"]
    assert (clone / "weights" / "encoder" / "model.safetensors").read_text() == "w"  # the link went, not the files


def test_a_worktree_left_by_a_killed_cell_is_removed_by_the_next(scratch, clone):
    commit = scratch.head_commit(clone)
    dead = subprocess.Popen(["true"])
    dead.wait()
    with scratch.worktree(commit, "", clone) as first:
        scratch.owner_file(first).write_text(str(dead.pid))  # as if its process was SIGKILLed
        with scratch.worktree(commit, "", clone) as second:
            assert not first.exists() and second.exists()


def test_cells_of_one_clone_add_and_remove_worktrees_at_once(scratch, clone):
    """Several cells of a clone (a worker's slots, a study beside a sweep) make and remove their
    worktrees at the same moments: git alone fails one of them ("failed to read
    .git/worktrees/<id>/commondir", seen in CI); every one succeeds, and none is left behind."""
    commit = scratch.head_commit(clone)
    loop = (f"import sys; sys.path.insert(0, {str(REPO / 'pipeline')!r}); import scratch; from pathlib import Path\n"
            f"for _ in range(12):\n"
            f"    with scratch.worktree({commit!r}, 'grid: {{}}\\n', Path({str(clone)!r})) as tree:\n"
            f"        assert (tree / 'src' / 'megl' / 'core.py').is_file()\n")
    procs = [subprocess.Popen([sys.executable, "-c", loop], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(errors)
    assert git(clone, "worktree", "list").splitlines() == [git(clone, "worktree", "list").splitlines()[0]]
    assert not list((clone / ".dvc" / "tmp" / "cells").iterdir())
