"""dvc.yaml's code deps are complete: every stage depends on its script and on every module of the
project that script imports, transitively (imports inside functions too: they run), so editing any
of them re-runs the stage and the committed results cannot silently stop matching the code. The
import closure is derived from the source (ast), not typed by hand."""

import ast
import copy
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"


def module_file(module: str) -> Path | None:
    path = SRC / Path(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def imported(path: Path, package: str) -> set[str]:
    """The megl modules a file imports (absolute or relative, at any depth of the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "megl"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            if base.split(".")[0] != "megl":
                continue
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}")}
    return found


def closure(script: Path) -> set[str]:
    """The script and every project file it imports, transitively (each module's packages too), as
    repository-relative paths."""
    seen, todo = set(), list(imported(script, ""))
    while todo:
        parts = todo.pop().split(".")
        for i in range(1, len(parts) + 1):
            module = ".".join(parts[:i])
            path = module_file(module)
            if module in seen or path is None:
                continue
            seen.add(module)
            todo += imported(path, module if path.name == "__init__.py" else ".".join(parts[: i - 1]))
    return {str(script.relative_to(REPO))} | {str(module_file(m).relative_to(REPO)) for m in seen}


def stage_definitions() -> dict[str, dict]:
    """Each stage of dvc.yaml as written (a foreach / matrix stage's body)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in stages.items()}


def missing_deps(stage: dict) -> list[str]:
    """The project files the stage's script imports that none of its deps covers (a dep covers
    itself and, as a folder, everything under it)."""
    script = next(w for w in stage["cmd"].split() if w.startswith("stages/") and w.endswith(".py"))
    deps = [d.rstrip("/") for d in stage.get("deps", []) if isinstance(d, str)]
    return sorted(f for f in closure(REPO / script) if not any(f == d or f.startswith(d + "/") for d in deps))


def test_every_stage_depends_on_all_the_code_it_runs():
    problems = {name: missing for name, stage in stage_definitions().items() if (missing := missing_deps(stage))}
    assert problems == {}, f"dvc.yaml misses code deps: {problems}"


def test_the_check_names_a_dep_that_is_removed():
    train = copy.deepcopy(stage_definitions()["train"])
    assert "src/megl/config.py" in closure(REPO / "stages/train.py")
    covering = [d for d in train["deps"] if "src/megl/config.py" == d or "src/megl/config.py".startswith(str(d).rstrip("/") + "/")]
    train["deps"] = [d for d in train["deps"] if d not in covering]
    assert "src/megl/config.py" in missing_deps(train)


def test_the_closure_follows_imports_inside_functions():
    # megl.train imports megl.models.build at the top, which imports megl.models.sdtg inside a function
    assert "src/megl/models/sdtg.py" in closure(REPO / "stages/train.py")
    assert "src/megl/evaluate/text.py" in closure(REPO / "stages/evaluate.py")  # started early, inside main()
