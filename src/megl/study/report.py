"""The study's report (studies/<name>/): report.md with the selection and the final comparison,
comparison.csv, MEGL against each other method paired by seed (versus.csv), the oracle selection
apart (the best test trial of the search: an upper bound, read by nothing else), and per dataset a
PNG of the search (test accuracy and mIoU against each method's main weight) and of the final runs
(mean with its 95 % interval), and the final means as CSVs that `dvc plots show` draws (plots/). An
ablation (no search) shows its arms against its baseline arm, and side by side over the datasets.

Honest by construction: a mean over fewer than two seeds has no interval; a difference is bold only
where its paired 95 % interval excludes zero; nothing is ranked.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from megl import methods
from megl.config import Params
from megl.study.stats import Interval, mean_ci, paired_ci
from megl.tables import DATASET_NAMES

METRICS = (("accuracy", "Accuracy"), ("miou", "mIoU"))


MAIN_WEIGHTS = ("variant.weight", "train.lambda_visual", "train.lambda_textual", "train.lr")


def main_weight(space_keys: list[str]) -> str | None:
    """The hyperparameter a method's plot shows: its explanation weight (MEGL: λ_visual), else the
    learning rate (the plain backbone)."""
    return next((k for k in MAIN_WEIGHTS if k in space_keys), None)


def _label(params: Params, variant: str) -> str:
    """The method's row name; with the variant's name where two compared variants share it (an
    ablation's arms)."""
    def row(name: str) -> str:
        v = params.variant(name)
        label = methods.get(v.method).row_label(v)
        return "Plain backbone" if label == "-" else label  # the paper's "-" (MEGL with no term) reads as a gap here

    label = row(variant)
    shared = sum(row(other) == label for other in params.study.variants) > 1
    return f"{label} ({variant})" if shared else label


def final_values(records: list[dict], dataset: str, backbone: str, method: str, metric: str) -> dict[int, float]:
    """seed -> test metric of the method's final runs (numbers only)."""
    out = {}
    for r in records:
        if r["phase"] == "final" and r["dataset"] == dataset and r["backbone"] == backbone and r["method"] == method:
            value = r["test"].get(metric)
            if _is_number(value):
                out[r["seed"]] = float(value)
    return out


def _cell(ci: Interval | None, bold: bool = False, signed: bool = False) -> str:
    if ci is None:
        return "-"  # no final run yet (a metric a method cannot have is absent from its records too)
    fmt = "{:+.4f}" if signed else "{:.4f}"
    text = ci.text(fmt)
    return f"**{text}**" if bold else text


def comparison_rows(params: Params, records: list[dict], selection: dict) -> list[dict]:
    study = params.study
    rows = []
    for d in study.datasets:
        for b in study.backbones:
            base = {m: final_values(records, d, b, study.baseline, m) for m, _ in METRICS}
            for v in study.variants:
                chosen = selection.get(d, {}).get(b, {}).get(v, {})
                row = {"dataset": d, "backbone": b, "method": v, "label": _label(params, v),
                       "hyperparameters": chosen.get("hyperparameters") or {}, "selected": chosen.get("trial_variant"),
                       "val": chosen.get("val") or {}}
                for m, _ in METRICS:
                    values = final_values(records, d, b, v, m)
                    row[m] = mean_ci(list(values.values())) if values else None
                    row[f"{m}_diff"] = None if v == study.baseline else paired_ci(values, base[m])
                    row[f"{m}_seeds"] = len(values)
                rows.append(row)
    return rows


def focus_variants(params: Params) -> list[str]:
    """The compared variants that are MEGL itself (its method, not the plain backbone): the report
    sets each against every other method, paired by seed. None in an ablation (its arms are all MEGL)."""
    study = params.study
    if study.hyperparameters_from:
        return []
    return [v for v in study.variants if v != study.baseline and params.variant(v).method == "megl"]


def versus_rows(params: Params, records: list[dict]) -> list[dict]:
    """focus − method, paired by seed, for each focus variant and each other compared method (the
    baseline's difference is the main table's Δ)."""
    study = params.study
    rows = []
    for d in study.datasets:
        for b in study.backbones:
            for f in focus_variants(params):
                own = {m: final_values(records, d, b, f, m) for m, _ in METRICS}
                for v in study.variants:
                    if v in (f, study.baseline):
                        continue
                    rows.append({"dataset": d, "backbone": b, "focus": f, "method": v,
                                 **{m: paired_ci(own[m], final_values(records, d, b, v, m)) for m, _ in METRICS}})
    return rows


def oracle_rows(params: Params, records: list[dict], selection: dict) -> list[dict]:
    """Per method, the search trial with the best *test* accuracy (ties: the lowest trial) beside the
    trial the declared rule selected, both at the search seed: how much a selection that reads test
    would have gained. An upper bound, reported apart; nothing else reads it."""
    study = params.study
    rows = []
    for d in study.datasets:
        for b in study.backbones:
            for v in study.variants:
                own = [r for r in records if r["phase"] == "search" and r["dataset"] == d and r["backbone"] == b
                       and r["method"] == v and _is_number(r["test"].get("accuracy"))]
                if not own:
                    continue
                best = min(own, key=lambda r: (-r["test"]["accuracy"], r["trial"]))
                chosen = selection.get(d, {}).get(b, {}).get(v, {}).get("trial_variant")
                picked = next((r for r in own if r["variant"] == chosen), None)
                rows.append({"dataset": d, "backbone": b, "method": v, "oracle": best["variant"],
                             "oracle_accuracy": best["test"]["accuracy"], "selected": chosen,
                             "selected_accuracy": picked["test"]["accuracy"] if picked else None,
                             "trials": len(own)})
    return rows


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _versus_lines(params: Params, versus: list[dict], d: str, b: str) -> list[str]:
    own = [r for r in versus if r["dataset"] == d and r["backbone"] == b]
    if not own:
        return []
    lines = []
    for f in dict.fromkeys(r["focus"] for r in own):
        name = _label(params, f)
        count = sum(r["focus"] == f for r in own)
        lines += [f"{name} against each method, paired by seed ({name} − method; bold where the 95 % interval "
                  f"excludes 0; {count} comparisons, each at 95 %, not corrected for multiplicity):", "",
                  f"| Method | Δ acc ({name} − method) | Δ mIoU ({name} − method) | Seeds |", "|---|---|---|---|"]
        for r in (r for r in own if r["focus"] == f):
            acc, miou = r["accuracy"], r["miou"]
            lines.append(f"| {_label(params, r['method'])} | {_diff_cell(acc)} | {_diff_cell(miou)} | {acc.n if acc else 0} |")
        lines.append("")
    return lines


def _oracle_lines(params: Params, oracle: list[dict], d: str, b: str) -> list[str]:
    own = [r for r in oracle if r["dataset"] == d and r["backbone"] == b]
    if not own:
        return []
    seed = params.study.search_seed
    lines = [f"Oracle selection, an upper bound and not a result: the search trial with the best *test* accuracy "
             f"(seed {seed}, one run each, no interval) beside the trial the declared rule selected, same seed. "
             "The gap is what reading test would have bought; no table above uses it.", "",
             f"| Method | Oracle trial | Its test acc (seed {seed}) | Selected trial | Its test acc (seed {seed}) | "
             "Gap | Trials |", "|---|---|---|---|---|---|---|"]
    for r in own:
        gap = (r["oracle_accuracy"] - r["selected_accuracy"]) if r["selected_accuracy"] is not None else None
        lines.append(f"| {_label(params, r['method'])} | {r['oracle']} | {_num(r['oracle_accuracy'])} | "
                     f"{r['selected'] or '-'} | {_num(r['selected_accuracy'])} | "
                     f"{'-' if gap is None else f'{gap:+.4f}'} | {r['trials']} |")
    return lines + [""]


def _hp_text(values: dict) -> str:
    return ", ".join(f"{k.split('.', 1)[1]}={v:g}" for k, v in sorted(values.items())) or "-"


def markdown(params: Params, rows: list[dict], selection: dict, records: list[dict], note: str,
             versus: list[dict] = (), oracle: list[dict] = ()) -> str:
    study = params.study
    rule = study.selection
    search = [r for r in records if r["phase"] == "search"]
    final = [r for r in records if r["phase"] == "final"]
    source = study.hyperparameters_from
    how = [
        f"- No search: every arm at the values study `{source.study}` selected for `{source.variant}` on each dataset "
        "(Selection below); the arms differ from the baseline arm in one thing each.",
    ] if source else [
        f"- Search: {study.trials} seeded random trials per method (search seed {study.search_seed}, training seed "
        f"{study.search_seed}), each method's space from the registry; {len(search)} search runs, "
        f"{sum(r['seconds'] for r in search):.0f} s.",
        f"- Selection (declared before the runs): maximise validation {rule.metric}; trials within {rule.tolerance} of the "
        f"best are tied; among them maximise validation {rule.tie_break or '(none)'}; then the lowest trial number. "
        "Validation data are drawn like train; no test metric is read.",
    ]
    lines = [
        f"# Study `{study.name}`",
        "",
        f"Generated by `python pipeline/study.py` ({note}). Protocol: docs/study.md; the study file: study.yaml.",
        "",
        *how,
        f"- Final: the selected trial of each {'arm' if source else 'method'} on seeds {list(study.final_seeds)} (the search "
        f"seed excluded); {len(final)} final runs, {sum(r['seconds'] for r in final):.0f} s.",
        "- Cells: mean ± half-width of the 95 % t-interval over seeds; Δ: the paired difference to "
        f"`{study.baseline}` (same seed), bold where its 95 % interval excludes 0. A value without ± has one seed.",
        "",
    ]
    expected = study.trials * len(study.variants)
    for d in study.datasets:
        for b in study.backbones:
            done = len({r["run"] for r in search if r["dataset"] == d and r["backbone"] == b})
            finals = len({r["run"] for r in final if r["dataset"] == d and r["backbone"] == b})
            progress = f"{finals} of {len(study.variants) * len(study.final_seeds)} final runs recorded. `-`: not run yet."
            if source and not selection.get(d, {}).get(b):
                progress += f" The arms wait for study `{source.study}`'s selection of `{source.variant}` here."
            if not source:
                progress = (f"Search: {done} of {expected} runs recorded"
                            + ("" if done == expected else " (selection and final runs wait for the whole search)")
                            + f"; {progress}")
            # an ablation has no search: no selected trial or validation of its own to show per arm
            first = ["Arm", "Hyperparameters"] if source else ["Method", "Selected", "Hyperparameters", "Val acc", "Val mIoU"]
            head = first + ["Accuracy", "Δ acc", "mIoU", "Δ mIoU", "Seeds"]
            lines += [f"## {DATASET_NAMES.get(d, d)} / {b}", "", progress, "",
                      "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for r in (r for r in rows if r["dataset"] == d and r["backbone"] == b):
                diff = {m: r[f"{m}_diff"] for m, _ in METRICS}
                val = r["val"]
                own = [r["label"], _hp_text(r["hyperparameters"])] if source else [
                    r["label"], r["selected"] or "-", _hp_text(r["hyperparameters"]), _num(val.get("accuracy")), _num(val.get("miou"))]
                lines.append("| " + " | ".join(own + [
                    _cell(r["accuracy"]), _diff_cell(diff["accuracy"]) if r["method"] != study.baseline else "-",
                    _cell(r["miou"]), _diff_cell(diff["miou"]) if r["method"] != study.baseline else "-",
                    str(r["accuracy_seeds"])]) + " |")
            lines.append("")
            lines += _selection_lines(params, selection.get(d, {}).get(b, {}), bool(source))
            lines += _versus_lines(params, versus, d, b)
            lines += _oracle_lines(params, oracle, d, b)
    if source:
        lines += _across_datasets_lines(params, rows)
    return "\n".join(lines)


def _diff_cell(ci: Interval | None) -> str:
    return _cell(ci, bool(ci and ci.excludes_zero()), True)


def _selection_lines(params: Params, chosen: dict, adopted: bool) -> list[str]:
    """One line per method; an ablation's arms share their source's selection, said once."""
    if not chosen:
        return []  # nothing selected yet: the progress line above says what it waits for
    reasons = {c["reason"] for c in chosen.values()}
    if adopted and len(reasons) == 1 and len(chosen) == len(params.study.variants):
        return [f"Selection: every arm at {next(iter(reasons))}.", ""]
    lines = ["Selection:"]
    for v in params.study.variants:
        c = chosen.get(v)
        if c:
            lines.append(f"- {_label(params, v)}: {c['trial_variant'] or 'none'}: {c['reason']}"
                         + (f" (tied: {', '.join(c['tied'])})" if len(c["tied"]) > 1 else "")
                         + (f"; excluded (no finite value): {', '.join(c['excluded'])}" if c["excluded"] else ""))
    return lines + [""]


def _across_datasets_lines(params: Params, rows: list[dict]) -> list[str]:
    """An ablation's arms side by side over the datasets: where each arm's paired interval against the
    baseline arm excludes 0, and with which sign. How many datasets a finding needs is the study's
    pre-registration's rule, not the report's; the counts are what that rule reads."""
    study = params.study
    pairs = [(d, b) for d in study.datasets for b in study.backbones]
    by_cell = {(r["dataset"], r["backbone"], r["method"]): r for r in rows}
    names = [f"{DATASET_NAMES.get(d, d)}" + (f" / {b}" if len(study.backbones) > 1 else "") for d, b in pairs]
    lines = ["## Across datasets", "",
             f"Each arm − `{study.baseline}`, paired by seed (bold where the 95 % interval excludes 0). Excluding 0: "
             "on how many datasets the interval lies above 0 (+) and below 0 (−); `-`: not run yet.", ""]
    for m, title in METRICS:
        head = ["Arm", *(f"Δ {title}: {n}" for n in names), "Excluding 0 (+ / −)"]
        lines += [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for v in study.variants:
            if v == study.baseline:
                continue
            cis = [by_cell[d, b, v][f"{m}_diff"] if (d, b, v) in by_cell else None for d, b in pairs]
            up = sum(bool(ci and ci.excludes_zero() and ci.mean > 0) for ci in cis)
            down = sum(bool(ci and ci.excludes_zero() and ci.mean < 0) for ci in cis)
            lines.append("| " + " | ".join([_label(params, v), *map(_diff_cell, cis), f"{up} / {down}"]) + " |")
        lines.append("")
    return lines


def _num(v) -> str:
    return f"{v:.4f}" if _is_number(v) else "-"


def comparison_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "backbone", "method", "selected", "hyperparameters", "metric", "mean", "ci_low", "ci_high",
                "seeds", "diff_mean", "diff_low", "diff_high", "diff_seeds"])
    for r in rows:
        for m, _ in METRICS:
            ci, diff = r[m], r[f"{m}_diff"]
            w.writerow([r["dataset"], r["backbone"], r["method"], r["selected"] or "", _hp_text(r["hyperparameters"]), m,
                        *(("%.6f" % x) for x in ((ci.mean, ci.low, ci.high) if ci else ())), *([""] * 3 if ci is None else []),
                        ci.n if ci else 0,
                        *(("%.6f" % x) for x in ((diff.mean, diff.low, diff.high) if diff else ())), *([""] * 3 if diff is None else []),
                        diff.n if diff else 0])
    return buf.getvalue()


def versus_csv(versus: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "backbone", "focus", "method", "metric", "diff_mean", "diff_low", "diff_high", "diff_seeds"])
    for r in versus:
        for m, _ in METRICS:
            ci = r[m]
            w.writerow([r["dataset"], r["backbone"], r["focus"], r["method"], m,
                        *((("%.6f" % ci.mean), ("%.6f" % ci.low), ("%.6f" % ci.high)) if ci else ("", "", "")),
                        ci.n if ci else 0])
    return buf.getvalue()


def plots(params: Params, rows: list[dict], records: list[dict], folder: Path) -> list[Path]:
    """Per dataset and backbone: the search (test accuracy and mIoU vs each method's main weight, for
    illustration: selection never reads them) and the final bars with their 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.hashsalt"] = "megl"  # deterministic output
    study = params.study
    written = []
    for d in study.datasets:
        for b in study.backbones:
            searched = any(r["phase"] == "search" and r["dataset"] == d and r["backbone"] == b for r in records)
            fig, axes = plt.subplots(2 if searched else 1, 2, figsize=(11, 8 if searched else 4.5), squeeze=False)
            for col, (m, title) in enumerate(METRICS):
                if not searched:  # an ablation: its final bars only
                    _bars(axes[0][col], [r for r in rows if r["dataset"] == d and r["backbone"] == b], m, title)
                    continue
                ax = axes[0][col]
                for v in study.variants:
                    own = [r for r in records if r["phase"] == "search" and r["dataset"] == d and r["backbone"] == b
                           and r["method"] == v]
                    key = main_weight(sorted(own[0]["hyperparameters"])) if own else None
                    pts = [(r["hyperparameters"][key], r["test"][m]) for r in own
                           if key and isinstance(r["test"].get(m), (int, float))]
                    if pts:
                        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=18,
                                   label=f"{_label(params, v)} ({key.split('.', 1)[1]})")
                ax.set_xscale("log")
                ax.set_xlabel("the method's main weight (the plain backbone: its lr), log scale")
                ax.set_ylabel(f"test {title} (search runs)")
                ax.set_title(f"search: {title}")
                if ax.get_legend_handles_labels()[0]:
                    ax.legend(fontsize=6)
                _bars(axes[1][col], [r for r in rows if r["dataset"] == d and r["backbone"] == b], m, title)
            fig.suptitle(f"{DATASET_NAMES.get(d, d)} / {b}")
            fig.tight_layout()
            path = folder / f"{d}-{b}.png"
            fig.savefig(path, dpi=90, metadata={"Software": None})
            plt.close(fig)
            written.append(path)
    return written


def _bars(ax, own: list[dict], m: str, title: str) -> None:
    means = [r[m].mean if r[m] else 0.0 for r in own]
    errs = [r[m].half_width if r[m] else 0.0 for r in own]
    ax.bar(range(len(own)), means, yerr=errs, capsize=3)
    ax.set_xticks(range(len(own)), [r["label"] for r in own], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(f"test {title}, mean ± 95 % CI")
    ax.set_title(f"final runs: {title}")


def plot_tables(rows: list[dict], folder: Path) -> list[Path]:
    """plots/<dataset>-<backbone>-<metric>.csv: each method's final mean and 95 % interval, what
    `dvc plots show` draws (dvc.yaml's top-level plots: a bar per method)."""
    out = folder / "plots"
    out.mkdir(exist_ok=True)
    written = []
    for d, b in dict.fromkeys((r["dataset"], r["backbone"]) for r in rows):
        for m, _ in METRICS:
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["method", "mean", "ci_low", "ci_high", "seeds"])
            for r in rows:
                if r["dataset"] == d and r["backbone"] == b and r[m] is not None:
                    w.writerow([r["label"], "%.6f" % r[m].mean, "%.6f" % r[m].low, "%.6f" % r[m].high, r[m].n])
            path = out / f"{d}-{b}-{m}.csv"
            path.write_text(buf.getvalue())
            written.append(path)
    return written


def write_report(params: Params, records: list[dict], folder: Path, protocol_note: str) -> None:
    import json

    selection_path = folder / "selection.json"
    selection = json.loads(selection_path.read_text()) if selection_path.is_file() else {}
    rows = comparison_rows(params, records, selection)
    versus, oracle = versus_rows(params, records), oracle_rows(params, records, selection)
    (folder / "report.md").write_text(markdown(params, rows, selection, records, protocol_note, versus, oracle) + "\n")
    (folder / "comparison.csv").write_text(comparison_csv(rows))
    if versus:
        (folder / "versus.csv").write_text(versus_csv(versus))
    plots(params, rows, records, folder)
    plot_tables(rows, folder)
