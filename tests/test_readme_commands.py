"""Every shell command the README and the DVC page show, checked against the default params without
running it (most train for minutes): a stage it names exists in `dvc stage list` after its own `-S`
overrides (applied by DVC's own code, then validated as the validate stage does); its DVC options
parse with DVC's own parser; a make target exists; a file it runs exists; the restore recipe names
every git-tracked output folder; a Prefect `--param` is a parameter of the flow. A command of a kind
this test does not know fails it, so a new example gets a check."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

PAGES = ("README.md", "docs/dvc.md")
ENV_ASSIGNMENT = re.compile(r"^[A-Z_]+=\S*$")


def commands(repo: Path) -> list[tuple[str, list[str]]]:
    """(page, argv) for every command of every ```bash block, `&&` chains split, comments and
    leading VAR=value assignments dropped."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", (repo / page).read_text(), re.S):
            for line in block.splitlines():
                for part in line.split("#")[0].split("&&"):
                    argv = shlex.split(part)
                    argv = argv[:next((i for i, a in enumerate(argv) if a in (">", "|")), len(argv))]  # a redirect
                    while argv and ENV_ASSIGNMENT.match(argv[0]):
                        argv = argv[1:]
                    if argv:
                        found.append((page, argv))
    return found


@pytest.fixture(scope="module")
def project(repo, tmp_path_factory):
    """A DVC project with the repository's dvc.yaml and params.yaml (no data: nothing runs)."""
    work = tmp_path_factory.mktemp("readme")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(repo / name, work / name)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=work, check=True)
    return work


def stage_names(project: Path) -> set[str]:
    out = subprocess.run([sys.executable, "-m", "dvc", "stage", "list", "--name-only"], cwd=project, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def check_dvc(argv: list[str], repo: Path, project: Path) -> None:
    from dvc.cli import parse_args
    from dvc.utils.hydra import apply_overrides

    from megl.config import load_params
    from megl.pipeline_checks import check_pipeline

    args = parse_args(argv[1:])  # DVC's own parser: an unknown option or subcommand exits
    if argv[1:3] != ["exp", "run"]:
        return
    params = project / "params.yaml"
    shutil.copy(repo / "params.yaml", params)
    if args.set_param:
        apply_overrides(params, args.set_param)
    check_pipeline(load_params(params), params)
    missing = set(args.targets or []) - stage_names(project)
    assert not missing, f"{shlex.join(argv)}: no such stage under the default params (and its -S): {sorted(missing)}"


def check_git(argv: list[str], repo: Path) -> None:
    assert argv[1:3] == ["checkout", "--"], shlex.join(argv)
    paths = argv[3:]
    for path in paths:
        assert subprocess.run(["git", "ls-files", "--error-unmatch", path], cwd=repo, capture_output=True).returncode == 0, \
            f"{shlex.join(argv)}: {path} is not tracked by git"
    # every git-tracked output (cache: false) an experiment rewrites is restored by the recipe
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    tracked = {Path(next(iter(o))).parts[0] for s in stages.values() for kind in ("outs", "metrics", "plots")
               for o in (s.get("do", s).get(kind) or []) if isinstance(o, dict) and next(iter(o.values())).get("cache") is False}
    tracked -= {"data"}  # data/params.ok: the validation mark, the same bytes for every valid params
    assert tracked <= set(paths), f"{shlex.join(argv)}: does not restore {sorted(tracked - set(paths))}"


def check_prefect(argv: list[str], repo: Path) -> None:
    """`prefect deployment run <flow>/<deployment> --param k=v`: a deployment pipeline/serve.py serves,
    with a parameter k."""
    assert argv[1:3] == ["deployment", "run"], shlex.join(argv)
    sys.path.insert(0, str(repo / "pipeline"))
    try:
        import serve
    finally:
        sys.path.pop(0)
    served = {f"{d.flow_name}/{d.name}": d for d in serve.deployments()}
    assert argv[3] in served, f"{shlex.join(argv)}: pipeline/serve.py serves {sorted(served)}"
    known = set(served[argv[3]]._parameter_openapi_schema.properties)
    for flag, value in zip(argv, argv[1:]):
        if flag == "--param":
            assert value.split("=")[0] in known, f"{shlex.join(argv)}: the flow's parameters are {sorted(known)}"


def test_every_command_of_the_docs(repo, project):
    makefile = (repo / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+):", makefile, re.M))
    seen = set()
    for page, argv in commands(repo):
        tool = argv[0] if argv[0] == "." else Path(argv[0]).name  # .venv/bin/dvc is dvc
        seen.add(tool)
        where = f"{page}: {shlex.join(argv)}"
        if tool == "dvc":
            check_dvc(argv, repo, project)
        elif tool == "make":
            assert argv[1] in targets, f"{where}: no make target {argv[1]}"
        elif tool == "git" and argv[1] == "checkout":
            check_git(argv, repo)
        elif tool == "git" and argv[1] == "commit":
            assert all((repo / p).exists() for p in argv[2:]), where
        elif tool == "prefect":
            check_prefect(argv, repo)
        elif tool == ".":
            assert (repo / argv[1]).is_file(), f"{where}: no file {argv[1]}"
        else:
            pytest.fail(f"{where}: a command this test does not check (add a check for it)")
    assert {"dvc", "make", "git"} <= seen
