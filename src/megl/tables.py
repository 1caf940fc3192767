"""The paper's Tables 1-5 (and a faithfulness table) rebuilt from metrics JSON alone.

Fixed orders and fixed number formats, so the same metrics always give the same bytes. Each table
is written as Markdown (best **bold**, second <u>underlined</u>, per backbone, as the paper marks
them), CSV (plain numbers) and LaTeX (\\textbf / \\underline).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from megl.atomic import write_bytes

DATASET_NAMES = {"object_me": "Object-ME", "action_me": "Action-ME"}
BACKBONE_NAMES = {"resnet18": "ResNet18", "vit_b16": "ViT-B/16"}
# Table 2 / 4 rows in the paper's order: the plain backbone first, MEGL last
METHOD_ORDER = ["baseline", "visual", "text", "visual_text", "megl"]
METHOD_NAMES = {"baseline": "-", "visual": "Visual", "text": "Text", "visual_text": "Visual+Text", "megl": "MEGL"}


@dataclasses.dataclass
class Cell:
    value: float | int | str | None
    fmt: str = "{:.4f}"
    mark: str = ""  # "best" | "second" | ""

    def text(self) -> str:
        if self.value is None:
            return "-"
        return self.fmt.format(self.value) if isinstance(self.value, (int, float)) else str(self.value)


@dataclasses.dataclass
class Table:
    name: str
    caption: str
    header: list[str]
    rows: list[list[Cell]]

    def markdown(self) -> str:
        def cell(c: Cell) -> str:
            t = c.text()
            return f"**{t}**" if c.mark == "best" else f"<u>{t}</u>" if c.mark == "second" else t

        lines = [f"<!-- {self.caption} -->", "| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        def q(s: str) -> str:
            return f'"{s}"' if any(ch in s for ch in ',"\n') else s

        lines = [",".join(q(h) for h in self.header)]
        lines += [",".join(q(c.text()) for c in row) for row in self.rows]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        def esc(s: str) -> str:
            return s.replace("\\", "\\textbackslash{}").replace("&", "\\&").replace("%", "\\%").replace("_", "\\_")

        def cell(c: Cell) -> str:
            t = esc(c.text())
            return f"\\textbf{{{t}}}" if c.mark == "best" else f"\\underline{{{t}}}" if c.mark == "second" else t

        lines = [
            "\\begin{table}[t]", "\\centering", f"\\caption{{{esc(self.caption)}}}",
            "\\begin{tabular}{" + "l" * 2 + "r" * (len(self.header) - 2) + "}", "\\toprule",
            " & ".join(esc(h) for h in self.header) + " \\\\", "\\midrule",
        ]
        lines += [" & ".join(cell(c) for c in row) + " \\\\" for row in self.rows]
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        return "\n".join(lines) + "\n"


def mark_best(rows: list[list[Cell]], columns: range, higher_is_better: dict[int, bool] | None = None) -> None:
    """Bold the best and underline the second best value of each column among `rows`."""
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


def table1(metrics: Path, datasets: list[str]) -> Table:
    rows = []
    for d in datasets:
        report = _load(metrics / d / "dataset.json")
        t = report["table1"] if report else {}
        rows.append([Cell(DATASET_NAMES.get(d, d)), Cell(t.get("samples"), "{:,}"), Cell(t.get("textual"), "{:,}"),
                     Cell(t.get("visual"), "{:,}"), Cell(t.get("classes"), "{:d}")])
    return Table("table1", "Table 1. Dataset statistics.", ["Dataset", "Total Samples", "Textual Exp.", "Visual Exp.", "# Classes"], rows)


def table2(metrics: Path, datasets, backbones, variants) -> Table:
    keys = ["accuracy", "precision", "recall", "f1", "miou"]
    header = ["Backbone", "Method"] + [f"{DATASET_NAMES.get(d, d)} {k}" for d in datasets for k in ("Accuracy", "Precision", "Recall", "F1", "mIoU")]
    rows = []
    for b in backbones:
        group = []
        for v in [m for m in METHOD_ORDER if m in variants]:
            row = [Cell(BACKBONE_NAMES.get(b, b)), Cell(METHOD_NAMES[v])]
            for d in datasets:
                m = _load(metrics / d / b / f"{v}.json") or {}
                row += [Cell(m.get(k)) for k in keys]
            group.append(row)
        mark_best(group, range(2, len(header)))
        rows += group
    return Table("table2", "Table 2. Classification and visual explainability (test split, macro averages, mIoU of the predicted-class CAM).", header, rows)


TEXT_KEYS = [("clipscore", "CLIPScore"), ("bleu_4", "B4"), ("meteor", "M"), ("rouge_l", "R"), ("spice", "S"), ("cider", "C")]


def table3(metrics: Path, datasets, backbones, variants) -> Table:
    header = ["Method", "Backbone"] + [f"{DATASET_NAMES.get(d, d)} {n}" for d in datasets for _, n in TEXT_KEYS]
    rows, clips, spice = [], set(), set()
    for b in backbones:
        for v in [m for m in METHOD_ORDER if m in variants and m in ("text", "visual_text", "megl")]:
            row = [Cell(f"{METHOD_NAMES[v]}"), Cell(BACKBONE_NAMES.get(b, b))]
            for d in datasets:
                m = _load(metrics / d / b / f"{v}.json") or {}
                row += [Cell(m.get(k)) for k, _ in TEXT_KEYS]
                clips |= {m["clipscore_clip"]} if "clipscore_clip" in m else set()
                spice |= {m["spice_status"].split(":")[0]} if "spice_status" in m else set()
            rows.append(row)
    mark_best(rows, range(2, len(header)))
    caption = "Table 3. Textual explanation quality (B4, M, R, S, C: BLEU-4, METEOR, ROUGE-L, SPICE, CIDEr)."
    if clips:  # which CLIP scored CLIPScore decides whether the column means anything
        caption += f" CLIPScore computed with: {'; '.join(sorted(clips))}."
    if "unavailable" in spice:
        caption += " SPICE unavailable (no CoreNLP jars; see spice_status in the metrics)."
    return Table("table3", caption, header, rows)


def table4(metrics: Path, datasets, backbones, variants) -> Table:
    header = ["Dataset", "Backbone", "Modules", "Accuracy", "Performance Change"]
    rows = []
    for d in datasets:
        for b in backbones:
            ref = (_load(metrics / d / b / "megl.json") or {}).get("accuracy")
            for v in [m for m in reversed(METHOD_ORDER) if m in variants]:
                acc = (_load(metrics / d / b / f"{v}.json") or {}).get("accuracy")
                change = None if v == "megl" or acc is None or not ref else f"{100 * (acc - ref) / ref:+.2f}%"
                rows.append([Cell(DATASET_NAMES.get(d, d)), Cell(BACKBONE_NAMES.get(b, b)), Cell(METHOD_NAMES[v]), Cell(acc), Cell(change)])
    return Table("table4", "Table 4. Ablation: test accuracy and change relative to MEGL.", header, rows)


def table5(metrics: Path, datasets, backbones) -> Table:
    header = ["Model", "Dataset", "Parameters", "Latency (ms)", "FPS", "Latency with explanation (ms)", "FPS with explanation", "Device"]
    rows = []
    for d in datasets:
        for b in backbones:
            e = _load(metrics / d / b / "efficiency_megl.json") or {}
            params = e.get("parameters_classifier")
            rows.append([
                Cell(f"MEGL-{BACKBONE_NAMES.get(b, b)}"), Cell(DATASET_NAMES.get(d, d)),
                Cell(f"{params / 1e6:.2f}M" if params else None), Cell(e.get("latency_ms"), "{:.2f}"), Cell(e.get("fps"), "{:.2f}"),
                Cell(e.get("latency_explained_ms"), "{:.2f}"), Cell(e.get("fps_explained"), "{:.2f}"),
                Cell(f"{e['device']} {e['dtype']}" if e else None),
            ])
    return Table("table5", "Table 5. Efficiency at batch size 1 (classification only, as the paper; and with CAM + explanation).", header, rows)


FAITH_KEYS = [("deletion_auc", "Deletion AUC", False), ("insertion_auc", "Insertion AUC", True),
              ("average_drop", "Average Drop (%)", False), ("increase_in_confidence", "Increase in Conf. (%)", True),
              ("pointing_game", "Pointing Game", True), ("relevance_mass", "Relevance Mass", True)]


def table_faithfulness(metrics: Path, datasets, backbones, variants) -> Table:
    header = ["Dataset", "Backbone", "Method"] + [n for _, n, _ in FAITH_KEYS]
    rows = []
    for d in datasets:
        for b in backbones:
            group = []
            for v in [m for m in METHOD_ORDER if m in variants]:
                m = _load(metrics / d / b / f"{v}.json") or {}
                group.append([Cell(DATASET_NAMES.get(d, d)), Cell(BACKBONE_NAMES.get(b, b)), Cell(METHOD_NAMES[v])]
                             + [Cell(m.get(k)) for k, _, _ in FAITH_KEYS])
            mark_best(group, range(3, len(header)), {3 + i: hi for i, (_, _, hi) in enumerate(FAITH_KEYS)})
            rows += group
    return Table("faithfulness", "Faithfulness (RISE deletion/insertion, Grad-CAM++ average drop / increase in confidence) and localisation extras.", header, rows)


def build_tables(metrics: Path, datasets: list[str], backbones: list[str], variants: list[str]) -> list[Table]:
    return [
        table1(metrics, datasets),
        table2(metrics, datasets, backbones, variants),
        table3(metrics, datasets, backbones, variants),
        table4(metrics, datasets, backbones, variants),
        table5(metrics, datasets, backbones),
        table_faithfulness(metrics, datasets, backbones, variants),
    ]


def write_tables(tables: list[Table], out: Path) -> None:
    for t in tables:
        write_bytes(out / f"{t.name}.md", t.markdown().encode())
        write_bytes(out / f"{t.name}.csv", t.csv().encode())
        write_bytes(out / f"{t.name}.tex", t.latex().encode())
