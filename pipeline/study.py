"""The fair comparison (docs/study.md), as one command:

    python pipeline/study.py [configs/study.yaml] [--phase search|final|report|all] [--max-runs N]

1. search: params.yaml with the study file's blocks laid over it (its datasets, validation drawn
   like train, schedule), plus one variant per trial: `study.trials` seeded random draws from each
   compared method's search space (megl.study.sampling), each an ordinary variant of the grid.
   Every trial trains with the search seed `study.search_seed` on every study dataset.
2. selection, per dataset and method, by the declared rule over validation metrics only
   (megl.study.selection) -> selection.json.
3. final: each method at its selected trial, on `study.final_seeds` (fresh seeds: the search seed's
   run was picked for being good on validation, so reusing it would carry that luck into the test).
4. report: test accuracy and mIoU, mean ± 95 % t-interval over the final seeds, and the paired
   difference to the baseline with its interval (megl.study.report) -> report.md, plots.

Every run goes through DVC in a scratch worktree at this commit (pipeline/scratch.py): its stages,
the shared cache and run-cache, MLflow runs nested under one parent run per invocation. After every
run its record (the trial's values, validation and test metrics, seconds, the code it ran) is
appended to studies/<name>/runs.jsonl: a study killed or stopped at a session's end resumes
where it stopped (records of the same code and protocol are kept; `--max-runs` bounds one call).
After a commit that changes the code, one record per method is run again first: the older records
are reused only if those give the same numbers (check_older_code).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable

import yaml

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO / "src", REPO / "pipeline"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import scratch  # noqa: E402
from megl import tracking  # noqa: E402
from megl.config import ConfigError, Params, load_params  # noqa: E402
from megl.layout import RunKey  # noqa: E402
from megl.study.selection import Trial, select  # noqa: E402
from megl.study.trials import trial_block, trial_name, trials_of  # noqa: E402

DEFAULT_STUDY = REPO / "configs" / "study.yaml"
CODE = ("src/", "stages/")  # the code deps of dvc.yaml's train and evaluate stages


# --- the study's params ----------------------------------------------------------------------------


def _merge(base, overlay) -> None:
    """overlay's mappings into base's, key by key; any other value replaces base's."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def study_params_text(params_text: str, overlay: dict, trials: dict[str, dict] | None = None,
                      grid: dict[str, list] | None = None) -> str:
    """params.yaml (comments kept) with the overlay's blocks laid over it (its variant blocks replace
    params.yaml's of the same name), trial variants added; with
    a grid, the params of a phase's runs: the grid set and the study block left out."""
    yaml_rt = scratch.round_trip_yaml()
    params = yaml_rt.load(params_text)
    _merge(params, {k: v for k, v in overlay.items() if k != "variants"})
    for name, block in (overlay.get("variants") or {}).items():
        # a study's variant block is whole, not laid key by key over params.yaml's: the default grid
        # carries the values a study selected, and the search must not start from them
        params["variants"][name] = block
    for name, block in (trials or {}).items():
        params["variants"][name] = block
    if grid:
        params.pop("study", None)  # the runs' params: a grid of some of the study's datasets, no study to check
    text = scratch.dump_yaml(yaml_rt, params)
    return scratch.with_grid(text, grid) if grid else text


def read_overlay(path: Path) -> dict:
    """The study file's blocks; with `extends: <file>` (from the repository root), that file's blocks
    with these laid over them, its `study:` block replaced (an ablation shares its source's data,
    schedule and validation, and declares its own study)."""
    try:
        overlay = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"study: {path}: {exc}")
    parent = overlay.pop("extends", None)
    if parent is None:
        return overlay
    base = read_overlay(REPO / parent)
    base.pop("study", None)
    _merge(base, overlay)
    return base


def load_study(params_text: str, where: Path) -> Params:
    """The params the text holds, checked like params.yaml (ConfigError names the file `where`)."""
    tmp = REPO / ".dvc" / "tmp" / f"study-params-{os.getpid()}.yaml"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(params_text)
    try:
        params = load_params(tmp)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(str(tmp), f"{where} over params.yaml")) from None
    finally:
        tmp.unlink(missing_ok=True)
    if params.study is None:
        raise ConfigError(f"{where}: no `study:` block")
    return params


def protocol_digest(merged: dict) -> str:
    """What the study's runs read of its params: a change there is a new protocol (its old records
    are kept in runs.jsonl, not reused); an edit elsewhere in params.yaml is not."""
    study = merged["study"]
    datasets = {d: merged["datasets"][d] for d in study["datasets"]}
    raw = {d["raw_dir"] for d in datasets.values()}
    sources = {block: {k: v for k, v in (merged.get(block) or {}).items() if v["out_dir"] in raw}
               for block in ("synthetic", "decoys")}
    part = {"datasets": datasets, **sources, "variants": {v: merged["variants"][v] for v in study["variants"]},
            "backbones": {b: merged["backbones"][b] for b in study["backbones"]},
            **{k: merged.get(k) for k in ("split", "saliency", "train", "evaluate", "compute", "text_head", "study")}}
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_digest() -> str:
    """The committed code a run's numbers depend on: git's hashes of the code deps dvc.yaml lists for
    the train and evaluate stages (what DVC itself re-runs a stage for), at HEAD."""
    stages = yaml.safe_load(scratch.git(REPO, "show", "HEAD:dvc.yaml"))["stages"]
    paths = sorted({d for name in ("train", "evaluate") for d in stages[name]["deps"] if d.startswith(CODE)})
    hashes = [scratch.git(REPO, "rev-parse", f"HEAD:{p}") for p in paths]
    return hashes and hashlib.sha256(" ".join(paths + hashes).encode()).hexdigest()[:16]


# --- the runs ---------------------------------------------------------------------------------------


class Records:
    """studies/<name>/runs.jsonl: one line per finished run, appended as it finishes; code.jsonl: the
    checks that older code's records are what this code makes (check_older_code)."""

    def __init__(self, folder: Path, code: str, protocol: str):
        self.path, self.checks_path = folder / "runs.jsonl", folder / "code.jsonl"
        self.code, self.protocol = code, protocol
        self.all = _lines(self.path)
        self.checks = _lines(self.checks_path)
        self.codes = self._same_as(code)

    def _same_as(self, code: str) -> set[str]:
        """code and every code a passed check shows makes the same numbers (checks chain)."""
        same, grew = {code}, True
        while grew:
            grew = False
            for c in self.checks:
                if c["identical"] and (c["from"] in same) != (c["to"] in same):
                    same |= {c["from"], c["to"]}
                    grew = True
        return same

    def current(self) -> list[dict]:
        """The records this code and protocol would make again (others are kept, not used)."""
        return [r for r in self.all if r["code"] in self.codes and r["protocol"] == self.protocol]

    def older(self) -> dict[str, list[dict]]:
        """This protocol's records of other code not yet checked against this code, by code (newest
        first); each code's list holds the records of every code a passed check made the same as it,
        since those are what a check of that code carries over."""
        checked = {c["from"] for c in self.checks if c["to"] == self.code}
        codes = list(dict.fromkeys(r["code"] for r in reversed(self.all) if r["protocol"] == self.protocol))
        out: dict[str, list[dict]] = {}
        for code in codes:
            if code in self.codes or code in checked:
                continue
            same = self._same_as(code)
            out[code] = [r for r in self.all if r["protocol"] == self.protocol and r["code"] in same]
        return out

    def unchecked(self) -> list[dict]:
        """Every record `older()` holds, once (a record of a code shown the same as several others is
        in each of their lists)."""
        return list({id(r): r for found in self.older().values() for r in found}.values())

    def done(self, phase: str, run: str, hyperparameters: dict) -> bool:
        return any(r["phase"] == phase and r["run"] == run and r["hyperparameters"] == hyperparameters for r in self.current())

    def append(self, record: dict) -> None:
        record = {"code": self.code, "protocol": self.protocol} | record
        _append(self.path, record)
        self.all.append(record)

    def add_check(self, check: dict) -> None:
        _append(self.checks_path, check)
        self.checks.append(check)
        self.codes = self._same_as(self.code)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _append(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(data, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


HEADLINE = ("accuracy", "f1", "miou", "pointing_game", "relevance_mass", "bleu_4", "chance_accuracy", "test_samples", "val_samples",
            "val_maps", "not_applicable")


def diverged_record(error: str, seconds: float) -> dict:
    """A trial whose loss diverged is a result of its hyperparameters: recorded, out of the selection.
    Any other failure (a killed process, a full disk) is not the trial's doing: it stops the study."""
    found = re.search(r"loss term '[^']+' is (nan|-?inf)[^\n]*", error)
    if not found:
        raise scratch.ScratchError(error)
    return {"seconds": round(seconds, 1), "restored": False, "val": {}, "test": {}, "train": {}, "not_applicable": None,
            "diverged": found.group(0)}


def run_one(tree: Path, key: RunKey, env: dict[str, str], log, pull: bool = False) -> dict:
    """`dvc repro` of the run's train and evaluate stages in the worktree (`--pull`: restored from the
    run-cache a work-pool cell pushed); its metrics."""
    started = time.monotonic()
    try:
        out = scratch.run_logged([scratch.dvc_command(), "repro", *(["--pull"] if pull else []), key.stage("train"),
                                  key.stage("evaluate")], tree, env, log, f"dvc repro {key.name}")
    except scratch.ScratchError as exc:
        return diverged_record(str(exc), time.monotonic() - started)
    folder = tree / "metrics" / key.parts
    train, val, test = _read(folder / "train.json"), _read(folder / "val.json"), _read(folder / "test.json")
    return {
        "seconds": round(time.monotonic() - started, 1),
        "restored": f"Stage '{key.stage('train')}' is cached" in out or f"Stage '{key.stage('train')}' didn't change" in out,
        "val": {k: v for k, v in val.items() if k in HEADLINE},
        "test": {k: v for k, v in test.items() if k in HEADLINE},
        # the epoch whose model was evaluated (train.checkpoint), and the best validation epoch: records
        # before 2026-12-07 hold the latter alone, as "checkpoint_epoch" (docs/study.md)
        "train": {"epochs": train.get("epochs"), "exported_epoch": train.get("exported_epoch"),
                  "best_val_epoch": train.get("best_epoch"),
                  "history": [{k: h[k] for k in ("epoch", "val_accuracy") if k in h} for h in train.get("history", [])]},
        "not_applicable": test.get("not_applicable") or train.get("not_applicable"),
    }


def search_plan(params: Params, blocks: dict[str, dict]) -> dict[str, dict[str, tuple[int, dict, dict]]]:
    """method variant -> {trial variant: (trial, values, its params block)}; `blocks`: the variants
    block of the study's params, as written."""
    study = params.study
    return {v: trials_of(v, params.variant(v), blocks[v], study.search_seed, study.trials) for v in study.variants}


@dataclasses.dataclass
class StudyContext:
    """What every phase of one call of the study shares."""

    params: Params  # params.yaml with the study file laid over it
    base: str  # params.yaml's text at the commit
    overlay: dict  # the study file's blocks
    blocks: dict[str, dict]  # method variant -> its params block
    trial_blocks: dict[str, dict]  # trial variant (`<method>_tNN`) -> its block with the trial's values
    trial_method: dict[str, tuple[str, int, dict]]  # trial variant -> (method variant, trial, values)
    records: Records
    commit: str
    env: dict[str, str]  # the stage processes' environment (MLflow parent run, interpreter)
    folder: Path  # studies/<name>/
    log: Callable[[str], None]
    submit: Callable | None = None  # the Prefect flow megl-study's: runs go to the work pool first

    def params_text(self, grid: dict[str, list], blocks: dict[str, dict] | None = None) -> str:
        """The params.yaml a run of `grid` reads: the study's, with these variant blocks (default: every
        trial's), narrowed to the grid."""
        blocks = self.trial_blocks if blocks is None else blocks
        return scratch.narrowed_params(study_params_text(self.base, self.overlay, blocks, grid), grid)


def run_phase(ctx: StudyContext, phase: str, runs: list[tuple[RunKey, str, int, dict]], params_text: str,
              max_runs: int | None) -> int:
    """Run what the records lack, in order, appending each record; returns how many ran. With
    `ctx.submit` (the Prefect flow megl-study): every run first as a cell of the work pool, on any
    worker, then each restored here from the run-cache it pushed (submit returns the failed runs'
    reasons)."""
    records, commit, env, log, submit = ctx.records, ctx.commit, ctx.env, ctx.log, ctx.submit
    missing = [r for r in runs if not records.done(phase, r[0].name, r[3])]
    todo = missing if max_runs is None else missing[:max_runs]
    log(f"{phase}: {len(runs) - len(missing)} of {len(runs)} runs recorded, {len(todo)} to run now")
    if not todo:
        return 0
    failed = submit([key for key, *_ in todo], params_text, env) if submit is not None else {}
    with scratch.worktree(commit, params_text) as tree:
        for i, (key, method, trial, values) in enumerate(todo, 1):
            log(f"{phase} {i}/{len(todo)}: {key.name} {values}")
            if key.name in failed:
                result = diverged_record(failed[key.name], 0.0)
            else:
                result = run_one(tree, key, env, log, pull=submit is not None)
            records.append({"phase": phase, "run": key.name, "dataset": key.dataset, "backbone": key.backbone,
                            "method": method, "variant": key.variant, "trial": trial, "seed": key.seed,
                            "hyperparameters": values, "commit": commit} | result)
    return len(todo)


COMPARED = ("val", "test", "train", "not_applicable", "diverged")  # what a record's run must give again


def differences(recorded: dict, again: dict) -> dict:
    """The parts of a record that a run made again gives otherwise: part -> {recorded, now}. A record
    written before 2026-12-07 names the best validation epoch `checkpoint_epoch` and lacks
    `exported_epoch` (the last epoch under `checkpoint: last`, set by the params alone): it is
    compared as this code writes it, on the fields it has, so the renamed field is no new number."""
    out = {}
    for part in COMPARED:
        old, now = recorded.get(part), again.get(part)
        if part == "train" and isinstance(old, dict) and "checkpoint_epoch" in old:
            old = {k: v for k, v in old.items() if k != "checkpoint_epoch"} | {"best_val_epoch": old["checkpoint_epoch"]}
            now = {k: v for k, v in (now or {}).items() if k != "exported_epoch"}
        if old != now:
            out[part] = {"recorded": recorded.get(part), "now": again.get(part)}
    return out


def check_older_code(ctx: StudyContext) -> None:
    """A code change that leaves the numbers alone (a comment, a refactor, a new option off by default)
    need not restart a study of hours. For each older code with records of this protocol: one record
    per method (of that code's records and of the codes already shown the same as it) is run again at
    this commit; when every one gives the same metrics (validation, test, the training history), those
    records count as this code's (code.jsonl says so, with the runs that showed it); at the first
    difference they do not, and the study runs everything again."""
    records, commit, env, log = ctx.records, ctx.commit, ctx.env, ctx.log
    for old, found in records.older().items():
        if old in records.codes:  # shown the same through a check made a moment ago (checks chain)
            continue
        # one record per method of everything this check would carry over: a method whose records all
        # come from an earlier code, shown the same as `old` on other methods, is run again too
        by_method: dict[str, dict] = {}
        for r in found:  # the method's last record, one that trained to the end where there is one
            if r["method"] not in by_method or not r.get("diverged") or by_method[r["method"]].get("diverged"):
                by_method[r["method"]] = r
        sample = [by_method[m] for m in sorted(by_method)]
        grid = {"datasets": sorted({r["dataset"] for r in sample}), "backbones": sorted({r["backbone"] for r in sample}),
                "variants": sorted({r["variant"] for r in sample}), "seeds": sorted({r["seed"] for r in sample})}
        again_blocks = {r["variant"]: trial_block(ctx.blocks[r["method"]], r["hyperparameters"]) for r in sample}
        text = ctx.params_text(grid, again_blocks)
        log(f"code {old} -> {records.code}: {len(found)} records; running one per method again to compare: "
            + ", ".join(r["run"] for r in sample))
        check = {"from": old, "to": records.code, "commit": commit, "runs": [r["run"] for r in sample]}
        with scratch.worktree(commit, text) as tree:
            for r in sample:
                again = run_one(tree, RunKey(r["dataset"], r["backbone"], r["variant"], r["seed"]), env, log)
                differs = differences(r, again)
                if differs:
                    records.add_check(check | {"identical": False, "runs": [r["run"]], "differs": differs})
                    log(f"code {old}: {r['run']} gives other numbers at this commit ({', '.join(differs)}): its "
                        f"{len(found)} records are not reused")
                    break
            else:
                records.add_check(check | {"identical": True})
                log(f"code {old}: the same numbers at this commit: its {len(found)} records are reused")


# --- selection --------------------------------------------------------------------------------------


def selection(params: Params, records: list[dict], datasets: list[str] | None = None) -> dict:
    """dataset -> backbone -> method variant -> the chosen trial, from the search records'
    validation metrics (a Trial holds nothing else)."""
    rule = params.study.selection
    out: dict = {}
    for d in datasets or params.study.datasets:
        for b in params.study.backbones:
            for v in params.study.variants:
                trials = [Trial(r["variant"], r["trial"], r["hyperparameters"], r["val"]) for r in records
                          if r["phase"] == "search" and r["dataset"] == d and r["backbone"] == b and r["method"] == v]
                choice = select(trials, rule.metric, rule.tolerance, rule.tie_break)
                out.setdefault(d, {}).setdefault(b, {})[v] = {
                    "trial_variant": choice.trial.variant if choice.trial else None,
                    "trial": choice.trial.trial if choice.trial else None,
                    "hyperparameters": choice.trial.hyperparameters if choice.trial else None,
                    "val": choice.trial.val if choice.trial else None,
                    "reason": choice.reason, "tied": list(choice.tied), "excluded": list(choice.excluded),
                    "trials_recorded": len(trials),
                }
    return out


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(".incoming")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def run_all(ctx: StudyContext, phase: str, budget: int | None) -> None:
    """Per dataset: its search, then (once complete) its selection and its final runs; an ablation:
    its arms at the source study's selection, once there is one. `budget`: at most this many runs."""
    params, study, records, log = ctx.params, ctx.params.study, ctx.records, ctx.log

    chosen: dict = {}
    for d in study.datasets:  # a dataset's search, its selection, its final runs: whole datasets come first
        if study.hyperparameters_from is not None:
            adopted = adopted_selection(params, d, ctx.blocks, ctx.trial_blocks, log)
            if adopted is None:
                continue
            chosen[d] = adopted
            _write_json(ctx.folder / "selection.json", chosen)
            if phase in ("final", "all"):
                budget = _final_runs(ctx, d, chosen, budget)
            continue
        search_runs = [(RunKey(d, b, name, study.search_seed), *ctx.trial_method[name])
                       for b in study.backbones for name in ctx.trial_blocks]
        if phase in ("search", "all"):
            grid = {"datasets": [d], "backbones": list(study.backbones), "variants": list(ctx.trial_blocks),
                    "seeds": [study.search_seed]}
            n = run_phase(ctx, "search", search_runs, ctx.params_text(grid), budget)
            budget = None if budget is None else budget - n
        if not all(records.done("search", key.name, values) for key, _, _, values in search_runs):
            log(f"{d}: search not complete: its selection and final runs wait for it")
            continue
        chosen |= selection(params, records.current(), [d])
        _write_json(ctx.folder / "selection.json", chosen)
        if phase in ("final", "all"):
            budget = _final_runs(ctx, d, chosen, budget)


def _final_runs(ctx: StudyContext, d: str, chosen: dict, budget: int | None) -> int | None:
    """Each variant at its chosen trial on the final seeds; the budget left."""
    study = ctx.params.study
    picked = {c["trial_variant"] for by_method in chosen[d].values() for c in by_method.values() if c["trial_variant"]}
    grid = {"datasets": [d], "backbones": list(study.backbones), "variants": sorted(picked), "seeds": list(study.final_seeds)}
    runs = [(RunKey(d, b, c["trial_variant"], s), v, c["trial"], c["hyperparameters"])
            for b, by_method in chosen[d].items() for v, c in by_method.items() if c["trial_variant"]
            for s in study.final_seeds]
    n = run_phase(ctx, "final", runs, ctx.params_text(grid), budget)
    return None if budget is None else budget - n


def adopted_selection(params: Params, d: str, blocks: dict[str, dict], trial_blocks: dict, log) -> dict | None:
    """An ablation's choice on dataset d: every arm at the values the source study selected for its
    variant (its selection.json), as trial variants `<arm>_tNN` added to trial_blocks; None while
    the source has not selected on d yet."""
    source = params.study.hyperparameters_from
    path = REPO / "studies" / source.study / "selection.json"
    selected = json.loads(path.read_text()) if path.is_file() else {}
    out: dict = {}
    for b in params.study.backbones:
        c = selected.get(d, {}).get(b, {}).get(source.variant)
        if not c or not c.get("trial_variant"):
            log(f"{d}/{b}: waits for study {source.study}'s selection of {source.variant} ({path.relative_to(REPO)})")
            return None
        for v in params.study.variants:
            name = trial_name(v, c["trial"])
            trial_blocks[name] = trial_block(blocks[v], c["hyperparameters"])
            out.setdefault(b, {})[v] = {
                "trial_variant": name, "trial": c["trial"], "hyperparameters": c["hyperparameters"], "val": None,
                "reason": f"study {source.study}'s selection of {source.variant} ({c['trial_variant']}): {c['reason']}",
                "tied": [], "excluded": [], "trials_recorded": 0,
            }
    return out


# --- the command ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None, submit=None, log=None) -> int:
    """The command; the Prefect flow megl-study calls it with `submit` (its runs go to the work pool)
    and its logger."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", nargs="?", default=str(DEFAULT_STUDY), help="the study file (blocks laid over params.yaml)")
    parser.add_argument("--phase", choices=("search", "final", "report", "all"), default="all")
    parser.add_argument("--max-runs", type=int, help="run at most this many runs in this call (the rest: the next call)")
    args = parser.parse_args(argv)

    log = log or (lambda line: print(line, flush=True))
    study_file = Path(args.study)
    overlay = read_overlay(study_file)
    base = (REPO / "params.yaml").read_text()
    merged = study_params_text(base, overlay)
    try:
        params = load_study(merged, study_file)
    except ConfigError as exc:
        sys.exit(f"study: {exc}")
    study = params.study
    changed = scratch.uncommitted_code(REPO)
    if changed and args.phase != "report":
        sys.exit(f"study: {REPO} has code changes that are not committed ({', '.join(changed[:8])}): the runs use the "
                 "commit, so commit them (or stash them) first")
    commit = scratch.head_commit(REPO)
    folder = REPO / "studies" / study.name
    merged_tree = yaml.safe_load(merged)
    protocol = protocol_digest(merged_tree)
    records = Records(folder, code_digest(), protocol)
    folder.mkdir(parents=True, exist_ok=True)
    as_run = study_file.read_text()
    if "extends" in (yaml.safe_load(as_run) or {}):  # the blocks as laid over params.yaml, not only this file's
        as_run = f"# {study_file.name} with the file it extends, as run\n" + yaml.safe_dump(overlay, sort_keys=False)
    (folder / "study.yaml").write_text(as_run)

    plan = search_plan(params, merged_tree["variants"])
    trial_blocks = {name: block for trials in plan.values() for name, (_, _, block) in trials.items()}
    trial_method = {name: (v, k, values) for v, trials in plan.items() for name, (k, values, _) in trials.items()}
    parent = _open_parent(params, commit, len(records.all)) if args.phase != "report" else None
    ctx = StudyContext(params, base, overlay, merged_tree["variants"], trial_blocks, trial_method, records, commit,
                _stage_env(params, parent), folder, log, submit)
    ok = False
    try:
        if args.phase != "report":
            check_older_code(ctx)
        run_all(ctx, args.phase, args.max_runs)
        ok = True
    finally:
        if parent is not None:
            tracking.finish_sweep(REPO, parent, ok, {"records": len(records.current())},
                                  {"study": study.name, "commit": commit, "records": len(records.current())}, {})

    if args.phase in ("report", "all"):
        from megl.study.report import write_report

        shown, note = records.current(), f"commit {commit[:12]}, code {records.code}, protocol {protocol}"
        unchecked = records.unchecked()
        if args.phase == "report" and unchecked:  # a report between runs: the records a check has yet to look at too
            shown += unchecked
            note += f"; {len(unchecked)} records of earlier code, not yet checked against this commit"
        write_report(params, shown, folder, protocol_note=note)
        log(f"report: {folder / 'report.md'}")
    return 0


def _open_parent(params: Params, commit: str, recorded: int) -> str | None:
    """The MLflow parent run of this call: the stage processes nest their runs under it."""
    if not params.tracking.enabled:
        return None
    study = params.study
    tags = {"kind": "study", "study": study.name, "mlflow.source.git.commit": commit}
    return tracking.start_sweep(REPO, params.tracking.experiment, f"study {study.name}", tags,
                                {"study": dataclasses.asdict(study), "records_before": recorded})


def _stage_env(params: Params, parent: str | None) -> dict[str, str]:
    from flows import stage_env  # the sweep's: this venv's python for the stages, MLflow store

    return stage_env(parent, tracking.tracking_uri(REPO) if params.tracking.enabled else None)


if __name__ == "__main__":
    sys.exit(main())
