"""A scratch workspace for one sweep cell (or one gather): a git worktree of this clone at the sweep's
commit, with the sweep's params.yaml, where DVC runs the stages.

Why a worktree and not this clone's own workspace: the clone may be a user's checkout (one machine:
the worker runs beside the person working), and parallel cells need separate workspaces (DVC locks
one). The worktree shares this clone's DVC cache (`cache.dir`) and default remote, so a cell restores
data and runs from the cache and run-cache when they are there (`dvc repro --pull`), and what it
makes is in the cache and, after `dvc push`, in the remote for every other host. Its folder lives
under .dvc/tmp/cells/ (ignored by git and DVC) and is removed when the cell ends; a cell killed
outright leaves one behind, which the next cell on this clone removes (its owner pid is dead).
Cells of one clone add and prune their worktrees one at a time (`admin_lock`): git reads every
worktree's admin folder while adding one, and fails on one another cell is adding or pruning.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Callable, Iterator


REPO = Path(__file__).resolve().parents[1]
CELLS = Path(".dvc") / "tmp" / "cells"
OWNER = ".owner-pid"  # <tree>.owner-pid beside each worktree (owner_file)
ADMIN_LOCK = CELLS.with_name("cells.lock")  # held while git adds or prunes a worktree of the clone
# Ignored by git and not DVC outputs, yet read by stages through params (a text head's encoder_path):
# what `make weights` converts from pip packages on each host. A worktree links the clone's.
LOCAL_INPUTS = ("weights",)

Log = Callable[[str], None]


class ScratchError(RuntimeError):
    """A command of the scratch workspace failed; the message ends with the tail of its output."""


def dvc_command() -> str:
    beside = Path(sys.executable).with_name("dvc")  # the venv's dvc, activated or not
    return str(beside) if beside.is_file() else "dvc"


def git(clone: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(clone), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise ScratchError(f"git {' '.join(args)} in {clone}: {out.stderr.strip()}")
    return out.stdout.strip()


def head_commit(clone: Path = REPO) -> str:
    return git(clone, "rev-parse", "HEAD")


# Tracked files a sweep may differ in from its commit: the params it passes along, the outputs DVC
# writes, and a study's records (studies/, committed as it goes). Anything else modified (code,
# dvc.yaml, configs) would not reach the workers.
NOT_CODE = ("params.yaml", "dvc.lock", "metrics/", "plots/", "tables/", "studies/")


def uncommitted_code(clone: Path = REPO) -> list[str]:
    """Tracked files modified against HEAD, and untracked files in the code folders, that are not
    params or DVC outputs: what a sweep at HEAD would silently leave out."""
    out = subprocess.run(["git", "-C", str(clone), "status", "--porcelain", "-z", "--untracked-files=all"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise ScratchError(f"git status in {clone}: {out.stderr.strip()}")
    entries = iter(out.stdout.split("\0"))
    changed = []
    for line in entries:
        if not line:
            continue
        if line[0] in "RC":
            next(entries, None)  # -z puts a rename's old path in an entry of its own
        path = line[3:]
        untracked = line.startswith("??")
        if path.startswith(NOT_CODE) or (untracked and not path.startswith(("src/", "stages/", "pipeline/", "configs/", "dvc.yaml"))):
            continue
        changed.append(path)
    return changed


def round_trip_yaml():
    from ruamel.yaml import YAML  # what DVC edits params.yaml with (`dvc exp run -S`): comments stay

    yaml_rt = YAML()
    yaml_rt.preserve_quotes = True
    yaml_rt.width = 4096
    yaml_rt.indent(mapping=2, sequence=4, offset=2)  # params.yaml's own style
    yaml_rt.representer.add_representer(type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml_rt


def dump_yaml(yaml_rt, params) -> str:
    import io

    buf = io.StringIO()
    yaml_rt.dump(params, buf)
    return buf.getvalue()


def with_grid(params_text: str, grid: dict[str, list]) -> str:
    """The params with `grid` set, every comment and other block as it was."""
    from ruamel.yaml.comments import CommentedSeq

    yaml_rt = round_trip_yaml()
    params = yaml_rt.load(params_text)
    for key, values in grid.items():
        seq = CommentedSeq(values)
        seq.fa.set_flow_style()  # `seeds: [0, 1]`, as params.yaml writes a grid
        params["grid"][key] = seq
    return dump_yaml(yaml_rt, params)


def narrowed_params(params_text: str, grid: dict[str, list]) -> str:
    """The params with `grid` set, and only the grid's datasets (and the sources they read): DVC then
    declares and builds exactly those stages. The train and evaluate stages read neither `grid` nor
    the dropped blocks, so their run-cache keys are those of the full params."""
    yaml_rt = round_trip_yaml()
    params = yaml_rt.load(with_grid(params_text, grid))
    keep = set(params["grid"]["datasets"])
    for name in [k for k in params["datasets"] if k not in keep]:
        del params["datasets"][name]
    raw_dirs = {v["raw_dir"] for v in params["datasets"].values()}
    for block in ("synthetic", "decoys"):
        for name in [k for k, v in (params.get(block) or {}).items() if v["out_dir"] not in raw_dirs]:
            del params[block][name]
    return dump_yaml(yaml_rt, params)


def owner_file(tree: Path) -> Path:
    """The pid of the process a worktree belongs to, beside it: written before the worktree is made,
    removed after it is gone, so a tree is never without its owner while it exists."""
    return tree.with_name(tree.name + OWNER)


def _remove_dead(clone: Path) -> None:
    """Worktrees of cells killed outright (their owner process is gone). A tree being made by a live
    cell already has its owner file: another cell's clean-up never removes it under git's hands."""
    folder = clone / CELLS
    for owner in folder.glob(f"*{OWNER}") if folder.is_dir() else []:
        if _alive(owner):
            continue
        shutil.rmtree(owner.with_name(owner.name[: -len(OWNER)]), ignore_errors=True)
        owner.unlink(missing_ok=True)
    for tree in folder.iterdir() if folder.is_dir() else []:
        if tree.is_dir() and not owner_file(tree).exists():  # its owner file goes first: a leftover
            shutil.rmtree(tree, ignore_errors=True)
    subprocess.run(["git", "-C", str(clone), "worktree", "prune"], capture_output=True)


def _alive(owner: Path) -> bool:
    try:
        os.kill(int(owner.read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


def running_worktrees(clone: Path = REPO) -> int:
    """Worktrees of this clone whose owner process runs: the cells (and gathers) running at once here."""
    folder = clone / CELLS
    return sum(_alive(owner) for owner in folder.glob(f"*{OWNER}")) if folder.is_dir() else 0


def _dvc_config(clone: Path, tree: Path) -> None:
    """The worktree uses the clone's cache and the clone's remotes (its config.local holds a URL set
    with `dvc remote modify --local`, and credentials); a local remote's relative URL is resolved
    against the clone, not the worktree. DVC's own config API: it resolves the URLs as DVC does."""
    from dvc.repo import Repo

    local = clone / ".dvc" / "config.local"
    if local.is_file():
        shutil.copy(local, tree / ".dvc" / "config.local")
    with Repo(str(clone)) as repo:
        cache = repo.cache.local_cache_dir
        remotes = {name: conf["url"] for name, conf in repo.config["remote"].items()}
    with Repo(str(tree)) as repo, repo.config.edit("local") as conf:
        conf["cache"]["dir"] = cache
        for name, url in remotes.items():
            if "://" not in url:  # a local folder: absolute, as the clone resolves it
                conf["remote"].setdefault(name, {})["url"] = url


def admin_lock(clone: Path):
    """An inter-process lock over the clone's worktree list (git has none: `git worktree add` beside
    another's add or prune fails with "failed to read .git/worktrees/<id>/commondir")."""
    from filelock import FileLock

    (clone / CELLS).mkdir(parents=True, exist_ok=True)
    return FileLock(clone / ADMIN_LOCK)


@contextlib.contextmanager
def worktree(commit: str, params_text: str, clone: Path = REPO) -> Iterator[Path]:
    """A worktree of `clone` at `commit` holding `params_text` as params.yaml; removed afterwards."""
    tree = clone / CELLS / uuid.uuid4().hex[:12]
    try:
        with admin_lock(clone):
            _remove_dead(clone)
            owner_file(tree).write_text(str(os.getpid()))
            git(clone, "worktree", "add", "--detach", "--force", str(tree), commit)
        (tree / "params.yaml").write_text(params_text)
        for name in LOCAL_INPUTS:
            if (clone / name).exists():
                (tree / name).symlink_to(clone / name, target_is_directory=True)
        _dvc_config(clone, tree)
        yield tree
    finally:
        shutil.rmtree(tree, ignore_errors=True)
        owner_file(tree).unlink(missing_ok=True)
        with admin_lock(clone):
            subprocess.run(["git", "-C", str(clone), "worktree", "prune"], capture_output=True)


def run_logged(cmd: list[str], cwd: Path, env: dict[str, str], log: Log, what: str, tail_lines: int = 25) -> str:
    """Run a command, each output line to `log`; return its output, or raise ScratchError with the tail."""
    log(f"{what}: {' '.join(cmd)}")
    lines: list[str] = []
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:
        for line in proc.stdout:
            lines.append(line.rstrip())
            log(f"{what} | {line.rstrip()}")
    if proc.returncode != 0:
        raise ScratchError(f"{what} exited with {proc.returncode}:\n" + "\n".join(lines[-tail_lines:]))
    return "\n".join(lines)
