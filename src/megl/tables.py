"""The paper's Tables 1-5 (and a faithfulness table) rebuilt from metrics JSON alone.

Fixed orders and fixed number formats, so the same metrics always give the same bytes. Each table
is written as Markdown (best **bold**, second <u>underlined</u>, per backbone, as the paper marks
them), CSV (plain numbers) and LaTeX (\\textbf / \\underline).

Seeds: every cell of a run table aggregates the seeds found for its (dataset, backbone, variant):
the mean, shown as `mean ± std` (sample standard deviation, ddof=1) in Markdown and LaTeX when
more than one seed is present. The CSV keeps the mean alone and adds the number of seeds per cell
group (a `Seeds` column). Best / second marks compare the means. Runs whose test metrics are
missing are skipped and listed in `Runs.missing`; the tables show what was found.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path

from megl.atomic import write_bytes
from megl.layout import RunKey, RunLayout, dataset_report, grid_runs, run_layout

DATASET_NAMES = {"object_me": "Object-ME", "action_me": "Action-ME"}
BACKBONE_NAMES = {"resnet18": "ResNet18", "vit_b16": "ViT-B/16"}
# Table 2 / 4 rows in the paper's order: the plain backbone first, MEGL last
METHOD_ORDER = ["baseline", "visual", "text", "visual_text", "megl"]
METHOD_NAMES = {"baseline": "-", "visual": "Visual", "text": "Text", "visual_text": "Visual+Text", "megl": "MEGL"}
PM = "±"


@dataclasses.dataclass
class Cell:
    value: float | int | str | None
    fmt: str = "{:.4f}"
    mark: str = ""  # "best" | "second" | ""
    std: float | None = None  # sample std over seeds, when more than one seed gave a value
    seeds: int = 0  # how many seeds the value aggregates (0: not a per-run number)

    def text(self, spread: bool = True) -> str:
        if self.value is None:
            return "-"
        if not isinstance(self.value, (int, float)):
            return str(self.value)
        t = self.fmt.format(self.value)
        return f"{t} {PM} {self.fmt.format(self.std)}" if spread and self.std is not None else t


@dataclasses.dataclass
class Table:
    name: str
    caption: str
    header: list[str]
    rows: list[list[Cell]]
    csv_only: frozenset[int] = frozenset()  # columns (the seed counts) the CSV has and the others not

    def _shown(self) -> list[int]:
        return [i for i in range(len(self.header)) if i not in self.csv_only]

    def markdown(self) -> str:
        def cell(c: Cell) -> str:
            t = c.text()
            return f"**{t}**" if c.mark == "best" else f"<u>{t}</u>" if c.mark == "second" else t

        cols = self._shown()
        lines = [f"<!-- {self.caption} -->", "| " + " | ".join(self.header[i] for i in cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(cell(row[i]) for i in cols) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        def q(s: str) -> str:
            return f'"{s}"' if any(ch in s for ch in ',"\n') else s

        lines = [",".join(q(h) for h in self.header)]
        lines += [",".join(q(c.text(spread=False)) for c in row) for row in self.rows]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        def esc(s: str) -> str:
            s = s.replace("\\", "\\textbackslash{}").replace("&", "\\&").replace("%", "\\%").replace("_", "\\_")
            return s.replace(PM, "$\\pm$")

        def cell(c: Cell) -> str:
            t = esc(c.text())
            return f"\\textbf{{{t}}}" if c.mark == "best" else f"\\underline{{{t}}}" if c.mark == "second" else t

        cols = self._shown()
        lines = [
            "\\begin{table}[t]", "\\centering", f"\\caption{{{esc(self.caption)}}}",
            "\\begin{tabular}{" + "l" * 2 + "r" * (len(cols) - 2) + "}", "\\toprule",
            " & ".join(esc(self.header[i]) for i in cols) + " \\\\", "\\midrule",
        ]
        lines += [" & ".join(cell(row[i]) for i in cols) + " \\\\" for row in self.rows]
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        return "\n".join(lines) + "\n"


def mark_best(rows: list[list[Cell]], columns, higher_is_better: dict[int, bool] | None = None) -> None:
    """Bold the best and underline the second best value (the mean) of each column among `rows`."""
    for col in columns:
        higher = True if higher_is_better is None else higher_is_better.get(col, True)
        values = sorted({c.value for r in rows if isinstance((c := r[col]).value, (int, float))}, reverse=higher)
        for r in rows:
            if values and r[col].value == values[0]:
                r[col].mark = "best"
            elif len(values) > 1 and r[col].value == values[1]:
                r[col].mark = "second"


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def aggregate(values: list, fmt: str = "{:.4f}") -> Cell:
    """Mean of the numeric values (one per seed), with the sample std (ddof=1) when there are two or more."""
    nums = [float(v) for v in values if _number(v)]
    if not nums:
        return Cell(None, fmt)
    # rounded far below any printed digit: equal means compare equal (best / second ties) whatever the sum order
    mean = round(math.fsum(nums) / len(nums), 12)
    return Cell(mean, fmt, std=round(statistics.stdev(nums), 12) if len(nums) > 1 else None, seeds=len(nums))


@dataclasses.dataclass
class Runs:
    """The metrics of a grid's runs, as found on disk (missing runs listed, not fatal)."""

    root: Path
    datasets: list[str]
    backbones: list[str]
    variants: list[str]
    seeds: list[int]
    test: dict[RunKey, dict]
    efficiency: dict[RunKey, dict]
    missing: list[RunLayout]  # runs without test metrics, in grid order

    def found(self, d: str, b: str, v: str, efficiency: bool = False) -> list[dict]:
        """The metrics of every seed found for a cell, in seed order."""
        source = self.efficiency if efficiency else self.test
        return [source[k] for s in self.seeds if (k := RunKey(d, b, v, s)) in source]

    def cell(self, d: str, b: str, v: str, metric: str, fmt: str = "{:.4f}", efficiency: bool = False) -> Cell:
        return aggregate([m.get(metric) for m in self.found(d, b, v, efficiency)], fmt)

    def count(self, d: str, b: str, v: str) -> Cell:
        return Cell(len(self.found(d, b, v)), "{:d}")


def load_runs(root: str | Path, datasets, backbones, variants, seeds) -> Runs:
    """Read every run's test (and efficiency) metrics under `root` (the project root)."""
    root = Path(root)
    test, efficiency, missing = {}, {}, []
    for key in grid_runs(datasets, backbones, variants, seeds):
        lay = run_layout(root, key)
        metrics = _load(lay.test_metrics)
        if metrics is None:
            missing.append(lay)
            continue
        test[key] = metrics
        if (e := _load(lay.efficiency)) is not None:
            efficiency[key] = e
    return Runs(root, list(datasets), list(backbones), list(variants), list(seeds), test, efficiency, missing)


def seeds_note(rows: list[list[Cell]]) -> str:
    """Caption sentence on the seed aggregation, only when some cell aggregates several seeds."""
    counts = sorted({c.seeds for row in rows for c in row if c.seeds})
    if not counts or counts[-1] < 2:
        return ""
    over = f"{counts[0]} seeds" if len(counts) == 1 else f"{counts[0]}-{counts[-1]} seeds per cell (see the CSV's Seeds columns)"
    return f" Mean {PM} sample standard deviation (ddof=1) over {over}."


def table1(runs: Runs) -> Table:
    rows = []
    for d in runs.datasets:
        report = _load(dataset_report(runs.root, d))
        t = report["table1"] if report else {}
        rows.append([Cell(DATASET_NAMES.get(d, d)), Cell(t.get("samples"), "{:,}"), Cell(t.get("textual"), "{:,}"),
                     Cell(t.get("visual"), "{:,}"), Cell(t.get("classes"), "{:d}")])
    return Table("table1", "Table 1. Dataset statistics.", ["Dataset", "Total Samples", "Textual Exp.", "Visual Exp.", "# Classes"], rows)


def table2(runs: Runs) -> Table:
    keys = ["accuracy", "precision", "recall", "f1", "miou"]
    header = ["Backbone", "Method"]
    for d in runs.datasets:
        header += [f"{DATASET_NAMES.get(d, d)} {k}" for k in ("Accuracy", "Precision", "Recall", "F1", "mIoU")]
        header.append(f"{DATASET_NAMES.get(d, d)} Seeds")
    seed_cols = frozenset(i for i, h in enumerate(header) if h.endswith(" Seeds"))
    rows = []
    for b in runs.backbones:
        group = []
        for v in [m for m in METHOD_ORDER if m in runs.variants]:
            row = [Cell(BACKBONE_NAMES.get(b, b)), Cell(METHOD_NAMES[v])]
            for d in runs.datasets:
                row += [runs.cell(d, b, v, k) for k in keys] + [runs.count(d, b, v)]
            group.append(row)
        mark_best(group, [i for i in range(2, len(header)) if i not in seed_cols])
        rows += group
    caption = "Table 2. Classification and visual explainability (test split, macro averages, mIoU of the predicted-class CAM)."
    return Table("table2", caption + seeds_note(rows), header, rows, seed_cols)


TEXT_KEYS = [("clipscore", "CLIPScore"), ("bleu_4", "B4"), ("meteor", "M"), ("rouge_l", "R"), ("spice", "S"), ("cider", "C")]


def table3(runs: Runs) -> Table:
    header = ["Method", "Backbone"]
    for d in runs.datasets:
        header += [f"{DATASET_NAMES.get(d, d)} {n}" for _, n in TEXT_KEYS] + [f"{DATASET_NAMES.get(d, d)} Seeds"]
    seed_cols = frozenset(i for i, h in enumerate(header) if h.endswith(" Seeds"))
    rows, clips, spice = [], set(), set()
    for b in runs.backbones:
        for v in [m for m in METHOD_ORDER if m in runs.variants and m in ("text", "visual_text", "megl")]:
            row = [Cell(f"{METHOD_NAMES[v]}"), Cell(BACKBONE_NAMES.get(b, b))]
            for d in runs.datasets:
                row += [runs.cell(d, b, v, k) for k, _ in TEXT_KEYS] + [runs.count(d, b, v)]
                for m in runs.found(d, b, v):
                    clips |= {m["clipscore_clip"]} if "clipscore_clip" in m else set()
                    spice |= {m["spice_status"].split(":")[0]} if "spice_status" in m else set()
            rows.append(row)
    mark_best(rows, [i for i in range(2, len(header)) if i not in seed_cols])
    caption = "Table 3. Textual explanation quality (B4, M, R, S, C: BLEU-4, METEOR, ROUGE-L, SPICE, CIDEr)."
    if clips:  # which CLIP scored CLIPScore decides whether the column means anything
        caption += f" CLIPScore computed with: {'; '.join(sorted(clips))}."
    if "unavailable" in spice:
        caption += " SPICE unavailable (no CoreNLP jars; see spice_status in the metrics)."
    return Table("table3", caption + seeds_note(rows), header, rows, seed_cols)


def _change(value: Cell, ref: Cell) -> Cell:
    if value.value is None or not ref.value:
        return Cell(None)
    return Cell(f"{100 * (value.value - ref.value) / ref.value:+.2f}%")


def table4(runs: Runs) -> Table:
    """Ablation (the paper's Table 4, with mIoU next to accuracy): every variant against MEGL."""
    header = ["Dataset", "Backbone", "Modules", "Accuracy", "Performance Change", "mIoU", "mIoU Change", "Seeds"]
    rows = []
    for d in runs.datasets:
        for b in runs.backbones:
            ref_acc, ref_miou = runs.cell(d, b, "megl", "accuracy"), runs.cell(d, b, "megl", "miou")
            for v in [m for m in reversed(METHOD_ORDER) if m in runs.variants]:
                acc, miou = runs.cell(d, b, v, "accuracy"), runs.cell(d, b, v, "miou")
                own = v == "megl"
                rows.append([Cell(DATASET_NAMES.get(d, d)), Cell(BACKBONE_NAMES.get(b, b)), Cell(METHOD_NAMES[v]),
                             acc, Cell(None) if own else _change(acc, ref_acc),
                             miou, Cell(None) if own else _change(miou, ref_miou), runs.count(d, b, v)])
    caption = "Table 4. Ablation: test accuracy and mIoU, and their change relative to MEGL (of the means)."
    return Table("table4", caption + seeds_note(rows), header, rows)


def table5(runs: Runs) -> Table:
    header = ["Model", "Dataset", "Parameters", "Latency (ms)", "FPS", "Latency with explanation (ms)", "FPS with explanation", "Device", "Seeds"]
    rows = []
    for d in runs.datasets:
        for b in runs.backbones:
            found = runs.found(d, b, "megl", efficiency=True)
            params = runs.cell(d, b, "megl", "parameters_classifier", efficiency=True).value
            devices = sorted({f"{e['device']} {e['dtype']}" for e in found if "device" in e and "dtype" in e})
            rows.append([
                Cell(f"MEGL-{BACKBONE_NAMES.get(b, b)}"), Cell(DATASET_NAMES.get(d, d)),
                Cell(f"{params / 1e6:.2f}M" if params else None),
                *(runs.cell(d, b, "megl", k, "{:.2f}", efficiency=True)
                  for k in ("latency_ms", "fps", "latency_explained_ms", "fps_explained")),
                Cell("; ".join(devices) if devices else None), Cell(len(found), "{:d}"),
            ])
    caption = "Table 5. Efficiency at batch size 1 (classification only, as the paper; and with CAM + explanation)."
    return Table("table5", caption + seeds_note(rows), header, rows, frozenset({len(header) - 1}))


FAITH_KEYS = [("deletion_auc", "Deletion AUC", False), ("insertion_auc", "Insertion AUC", True),
              ("average_drop", "Average Drop (%)", False), ("increase_in_confidence", "Increase in Conf. (%)", True),
              ("pointing_game", "Pointing Game", True), ("relevance_mass", "Relevance Mass", True)]


def table_faithfulness(runs: Runs) -> Table:
    header = ["Dataset", "Backbone", "Method"] + [n for _, n, _ in FAITH_KEYS] + ["Seeds"]
    rows = []
    for d in runs.datasets:
        for b in runs.backbones:
            group = []
            for v in [m for m in METHOD_ORDER if m in runs.variants]:
                group.append([Cell(DATASET_NAMES.get(d, d)), Cell(BACKBONE_NAMES.get(b, b)), Cell(METHOD_NAMES[v])]
                             + [runs.cell(d, b, v, k) for k, _, _ in FAITH_KEYS] + [runs.count(d, b, v)])
            mark_best(group, range(3, 3 + len(FAITH_KEYS)), {3 + i: hi for i, (_, _, hi) in enumerate(FAITH_KEYS)})
            rows += group
    caption = "Faithfulness (RISE deletion/insertion, Grad-CAM++ average drop / increase in confidence) and localisation extras."
    return Table("faithfulness", caption + seeds_note(rows), header, rows, frozenset({len(header) - 1}))


def build_tables(runs: Runs) -> list[Table]:
    return [table1(runs), table2(runs), table3(runs), table4(runs), table5(runs), table_faithfulness(runs)]


def write_tables(tables: list[Table], out: Path) -> None:
    for t in tables:
        write_bytes(out / f"{t.name}.md", t.markdown().encode())
        write_bytes(out / f"{t.name}.csv", t.csv().encode())
        write_bytes(out / f"{t.name}.tex", t.latex().encode())
