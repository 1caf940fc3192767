"""The paper's Tables 1-5 (and a faithfulness table) rebuilt from metrics JSON alone.

Fixed orders and fixed number formats, so the same metrics always give the same bytes. Each table
is written as Markdown (best **bold**, second <u>underlined</u>, per backbone, as the paper marks
them), CSV (plain numbers) and LaTeX (\\textbf / \\underline).

Honest by construction:
- a row says which model produced it: "ResNet18 (tiny)" for the random-init tiny profile,
  "(random init)" for the paper architecture without pretrained weights (from test.json);
- a metric that could not be computed for real (CLIPScore without local CLIP weights, SPICE without
  CoreNLP) shows `n/a`, and the caption says why; a run that is missing shows `-`;
- marks are given only where the ranking means something: best / second only where the cell's
  95 % interval over seeds lies beyond the next one's (so never with one seed, never to a tie or a
  single row), in Tables 2 and 4 only to a paired difference whose interval excludes 0, and
  never to a model that is not above chance (one-sided binomial test of its test accuracy against
  the majority-class rate, p >= ALPHA, pooled over seeds): such rows carry a dagger and are left
  out of every ranking;
- Table 4 gives changes as differences (not percentages of values that may be near zero); with
  several seeds the mean ± std of the per-seed differences;
- every caption states the seed count: with one seed the cells are single runs, with more they
  are `mean ± std` (sample standard deviation, ddof=1); the CSV keeps the mean and a Seeds column.
Runs whose test metrics are missing are skipped and listed in `Runs.missing`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from megl import methods
from megl.atomic import write_bytes
from megl.chance import ALPHA, runs_above_chance
from megl.config import VariantConfig
from megl.layout import RunKey, RunLayout, dataset_report, grid_runs, run_layout
from megl.study.stats import mean_ci

DATASET_NAMES = {"object_me": "Object-ME", "action_me": "Action-ME", "object_me_varied": "Object-ME (varied)",
                 "action_me_varied": "Action-ME (varied)", "decoy_fmnist": "DecoyFMNIST",
                 "object_me_varied_112": "Object-ME (varied, 112 px)", "decoy_fmnist_112": "DecoyFMNIST (112 px)"}
BACKBONE_NAMES = {"resnet18": "ResNet18", "vit_b16": "ViT-B/16", "dinov2_s14": "DINOv2-S/14"}
# Rows come from the method registry (megl.methods): names, groups and order. Table 2 in the paper's
# order: the plain backbone (MEGL with no term), the visual-EGL baselines in registry order, MEGL's
# ablations by their terms, MEGL last; the MLLM baselines form a group of their own.
PM = "±"
NA = "n/a"  # computed metric that could not be computed for real (the caption says why)
DAGGER = "†"  # not above chance: left out of every ranking
MLLM_TINY_NOTE = ("LLaVA (tiny): a random-init tiny LLaVA (CLIP vision tower + 2-layer Llama from config) "
                  "fine-tuned like LLaVA-1.5, not LLaVA-1.5-7B; classes parsed from its greedy answers")
PROFILE_NOTE = {
    "tiny": "(tiny): random-init tiny profile of the named architecture, trained from scratch, not the paper's model",
    "random init": "(random init): the paper's architecture without pretrained weights",
}


@dataclasses.dataclass
class Cell:
    value: float | int | str | None
    fmt: str = "{:.4f}"
    mark: str = ""  # "best" | "second" | "significant" (a paired interval that excludes 0: bold) | ""
    half: float | None = None  # half-width of the 95 % t-interval over seeds, when two or more gave a value
    seeds: int = 0  # how many seeds the value aggregates (0: not a per-run number)
    note: str = ""  # shown after the value in Markdown / LaTeX (the chance dagger), not in the CSV

    def text(self, spread: bool = True) -> str:
        """As shown; spread=False (the CSV): the plain value, no ± and no note."""
        if self.value is None:
            return "-"
        if not isinstance(self.value, (int, float)):
            return f"{self.value} {self.note}" if spread and self.note else str(self.value)
        t = self.fmt.format(self.value)
        if spread and self.half is not None:
            t = f"{t} {PM} {self.fmt.replace('+', '').format(self.half)}"
        return f"{t} {self.note}" if spread and self.note else t


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
            return f"**{t}**" if c.mark in ("best", "significant") else f"<u>{t}</u>" if c.mark == "second" else t

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
            return f"\\textbf{{{t}}}" if c.mark in ("best", "significant") else f"\\underline{{{t}}}" if c.mark == "second" else t

        cols = self._shown()
        lines = [
            "\\begin{table}[t]", "\\centering", f"\\caption{{{esc(self.caption)}}}",
            "\\begin{tabular}{" + "l" * 2 + "r" * (len(cols) - 2) + "}", "\\toprule",
            " & ".join(esc(self.header[i]) for i in cols) + " \\\\", "\\midrule",
        ]
        lines += [" & ".join(cell(row[i]) for i in cols) + " \\\\" for row in self.rows]
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        return "\n".join(lines) + "\n"


def _beats(a: Cell, b: Cell, higher: bool) -> bool:
    """a's 95 % interval lies wholly beyond b's (each over two or more seeds): a rank that is not noise.
    Conservative (two intervals that just touch can still differ), but it needs no pairing."""
    if a.half is None or b.half is None:
        return False
    return a.value - a.half > b.value + b.half if higher else a.value + a.half < b.value - b.half


def mark_best(rows: list[list[Cell]], columns, higher_is_better: dict[int, bool] | None = None,
              ranked: list[bool] | None = None) -> None:
    """Bold the best and underline the second best value (the mean) of each column among the
    `ranked` rows (default: all), only where the rank is not noise: best when its 95 % interval lies
    beyond the runner-up's, second when it also lies beyond the third's (`_beats`). So a single row,
    a tie, or one seed per cell (no interval) marks nothing."""
    ranked = [True] * len(rows) if ranked is None else ranked
    for col in columns:
        higher = True if higher_is_better is None else higher_is_better.get(col, True)
        cells = sorted((r[col] for r, ok in zip(rows, ranked) if ok and _number(r[col].value)),
                       key=lambda c: c.value, reverse=higher)
        if len(cells) < 2 or not _beats(cells[0], cells[1], higher):
            continue
        cells[0].mark = "best"
        if len(cells) > 2 and _beats(cells[1], cells[2], higher):
            cells[1].mark = "second"


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def aggregate(values: list, fmt: str = "{:.4f}") -> Cell:
    """Mean of the numeric values (one per seed), with the half-width of its 95 % t-interval
    (megl.study.stats) when there are two or more; `n/a` when runs were found but none has a number
    (a metric that could not be computed)."""
    nums = [float(v) for v in values if _number(v)]
    if not nums:
        return Cell(NA if values else None, fmt)
    # rounded far below any printed digit: equal means compare equal (best / second ties) whatever the sum order
    mean = round(math.fsum(nums) / len(nums), 12)
    return Cell(mean, fmt, half=round(mean_ci(nums).half_width, 12) if len(nums) > 1 else None, seeds=len(nums))


def excludes_zero(cell: Cell) -> bool:
    """A paired difference over two or more seeds whose 95 % interval does not contain 0."""
    return _number(cell.value) and cell.half is not None and abs(cell.value) > cell.half


def _significant(cell: Cell) -> Cell:
    if excludes_zero(cell):
        cell.mark = "significant"
    return cell


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
    configs: dict[str, VariantConfig] = dataclasses.field(default_factory=dict)  # params `variants`

    def method(self, v: str) -> methods.Method:
        return methods.get(self.config(v).method)

    def config(self, v: str) -> VariantConfig:
        return self.configs.get(v) or VariantConfig()

    def _order(self, v: str) -> tuple:
        """Table order: MEGL with no term (the plain backbone), the baselines in registry order, then
        MEGL's variants by their terms (fewest first; text after visual), a multi-layer Â last."""
        m, c = self.method(v), self.config(v)
        names = list(methods.REGISTRY)
        if m.group != "megl":
            return (1, names.index(m.name), v)
        terms = c.visual + c.consistency + c.text
        return (0 if not terms else 2, c.explainer == "multilayer", terms, c.text, v)

    def classifier_variants(self, among=None) -> list[str]:
        found = [v for v in self.variants if self.method(v).model == "classifier" and (among is None or among(v))]
        return sorted(found, key=self._order)

    def ablation_variants(self) -> list[str]:
        """Table 4: MEGL's own terms, with Grad-CAM as Â."""
        return self.classifier_variants(lambda v: self.method(v).group == "megl" and self.config(v).explainer is None)

    def plain(self) -> str | None:
        """The plain backbone (MEGL with no term: cross-entropy only): Table 2's differences."""
        none = [v for v in self.ablation_variants() if not (c := self.config(v)).visual and not c.consistency and not c.text]
        return none[0] if none else None

    def reference(self) -> str | None:
        """The full MEGL variant (every term, Grad-CAM): Table 4's differences and Table 5's row."""
        full = [v for v in self.ablation_variants() if (c := self.config(v)).visual and c.consistency and c.text]
        return full[0] if full else None

    def label(self, v: str) -> str:
        """The Method column: the registry's name for the variant; a variant whose name another
        variant's row already takes is told apart by its own name."""
        label, model = self.method(v).row_label(self.config(v)), self.method(v).model
        clash = [w for w in self.variants if w != v and self.method(w).model == model
                 and self.method(w).row_label(self.config(w)) == label]
        return f"{label} [{v}]" if clash and v != self.method(v).name else label

    def writes_explanations(self, v: str) -> bool:
        return self.method(v).writes_explanations(self.config(v))

    def found(self, d: str, b: str, v: str, efficiency: bool = False) -> list[dict]:
        """The metrics of every seed found for a cell, in seed order."""
        source = self.efficiency if efficiency else self.test
        return [source[k] for s in self.seeds if (k := RunKey(d, b, v, s)) in source]

    def cell(self, d: str, b: str, v: str, metric: str, fmt: str = "{:.4f}", efficiency: bool = False) -> Cell:
        return aggregate([m.get(metric) for m in self.found(d, b, v, efficiency)], fmt)

    def count(self, d: str, b: str, v: str) -> Cell:
        return Cell(len(self.found(d, b, v)), "{:d}")

    def above_chance(self, d: str, b: str, v: str) -> bool:
        """Whether the cell's test accuracy, pooled over its seeds, is above the majority-class rate
        (megl.chance). Metrics without the counts are taken as above."""
        return runs_above_chance(self.found(d, b, v))

    def profile(self, b: str) -> str:
        """The backbone's weights as the runs' test metrics record them: "tiny", "random init",
        "pretrained", or "" when the metrics do not say."""
        seen = set()
        for d in self.datasets:
            for v in self.variants:
                for m in self.found(d, b, v):
                    if m.get("backbone_profile") == "tiny":
                        seen.add("tiny")
                    elif "backbone_profile" in m:
                        seen.add("pretrained" if m.get("backbone_pretrained") else "random init")
        return " + ".join(sorted(seen))

    def backbone(self, b: str) -> str:
        """The backbone's row label, with its profile unless it is the real, pretrained model."""
        name, profile = BACKBONE_NAMES.get(b, b), self.profile(b)
        return f"{name} ({profile})" if profile and profile != "pretrained" else name

    def mllm_backbone(self, d: str, v: str) -> str | None:
        """The backbone folder an MLLM baseline's runs live in (trained once per dataset, under the
        grid's first backbone; the others are n/a records), or None when none was found."""
        for b in self.backbones:
            found = self.found(d, b, v)
            if found and not any("not_applicable" in m for m in found):
                return b
        return None

    def mllm_label(self) -> str:
        profiles = sorted({m.get("mllm_profile", "tiny") for d in self.datasets for b in self.backbones
                           for v in self.mllm_variants() for m in self.found(d, b, v) if "model_family" in m})
        if not profiles:
            return "LLaVA"
        return "LLaVA (tiny)" if profiles == ["tiny"] else "LLaVA-1.5" if profiles == ["paper"] else "LLaVA (" + " + ".join(profiles) + ")"

    def mllm_variants(self) -> list[str]:
        names = list(methods.REGISTRY)
        return sorted((v for v in self.variants if self.method(v).model == "mllm"), key=lambda v: (names.index(self.method(v).name), v))

    def mllm_name(self, v: str) -> str:
        """LLaVA (tiny), LLaVA (tiny)-Fine-tune-CoT, ...: the model, then the method when it is not plain."""
        label = self.label(v)
        return self.mllm_label() if label == "-" else f"{self.mllm_label()}-{label}"

    def profile_note(self, mllm: bool = False) -> str:
        """Caption sentence for the profiles the rows carry (mllm: the table has the MLLM rows)."""
        notes = [PROFILE_NOTE[p] for p in PROFILE_NOTE if any(p in self.profile(b).split(" + ") for b in self.backbones)]
        if mllm and self.mllm_label() == "LLaVA (tiny)":
            notes.append(MLLM_TINY_NOTE)
        return (" " + "; ".join(notes) + ".") if notes else ""


def load_runs(root: str | Path, datasets, backbones, variants, seeds, configs: dict[str, VariantConfig] | None = None) -> Runs:
    """Read every run's test (and efficiency) metrics under `root` (the project root); `configs`:
    params `variants` (which method each variant runs)."""
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
    return Runs(root, list(datasets), list(backbones), list(variants), list(seeds), test, efficiency, missing, dict(configs or {}))


def seeds_note(rows: list[list[Cell]]) -> str:
    """Caption sentence on the seed count: single runs (no spread), or mean ± 95 % interval over n seeds."""
    counts = sorted({c.seeds for row in rows for c in row if c.seeds})
    if not counts:
        return ""
    if counts[-1] < 2:
        return " One seed per cell: single runs, no spread; differences within a few points are noise."
    over = f"{counts[0]} seeds" if len(counts) == 1 else f"{counts[0]}-{counts[-1]} seeds per cell (see the CSV's Seeds columns)"
    return f" Mean {PM} half-width of the 95 % t-interval over {over}."


def chance_note(rows: list[list[Cell]]) -> str:
    if not any(c.note == DAGGER for row in rows for c in row):
        return ""
    return (f" {DAGGER} not above chance (test accuracy against the majority-class rate, one-sided binomial "
            f"test pooled over seeds, p >= {ALPHA}): left out of the ranking.")


def _at_chance(cell: Cell) -> Cell:
    cell.note = DAGGER
    return cell


def table1(runs: Runs) -> Table:
    rows = []
    for d in runs.datasets:
        report = _load(dataset_report(runs.root, d))
        t = report["table1"] if report else {}
        rows.append([Cell(DATASET_NAMES.get(d, d)), Cell(t.get("samples"), "{:,}"), Cell(t.get("textual"), "{:,}"),
                     Cell(t.get("visual"), "{:,}"), Cell(t.get("classes"), "{:d}")])
    return Table("table1", "Table 1. Dataset statistics.", ["Dataset", "Total Samples", "Textual Exp.", "Visual Exp.", "# Classes"], rows)


def table2(runs: Runs) -> Table:
    """Classification and localisation; per dataset the paired difference of accuracy and mIoU to the
    plain backbone (same seed), bold where its 95 % interval excludes 0. Nothing else is marked: a
    ranking of means would rank noise."""
    keys = ["accuracy", "precision", "recall", "f1", "miou"]
    header = ["Backbone", "Method"]
    for d in runs.datasets:
        name = DATASET_NAMES.get(d, d)
        header += [f"{name} {k}" for k in ("Accuracy", "Precision", "Recall", "F1", "mIoU")]
        header += [f"{name} Accuracy - plain", f"{name} mIoU - plain", f"{name} Seeds", f"{name} Above chance"]
    csv_only = frozenset(i for i, h in enumerate(header) if h.endswith((" Seeds", " Above chance")))
    rows = []
    # the MLLM baselines first, as the paper; then each backbone with its methods
    groups = [(None, runs.mllm_variants())] if runs.mllm_variants() else []
    groups += [(b, runs.classifier_variants()) for b in runs.backbones]
    plain = runs.plain()
    for b, variants in groups:
        label = runs.mllm_label() if b is None else runs.backbone(b)
        group = [[Cell(label), Cell(runs.label(v))] for v in variants]
        for d in runs.datasets:
            where = [b if b is not None else runs.mllm_backbone(d, v) for v in variants]
            for row, v, w in zip(group, variants, where):
                if w is None:
                    row += [Cell(None)] * (len(keys) + 2) + [Cell(0, "{:d}"), Cell("no")]
                    continue
                ok = runs.above_chance(d, w, v)
                cells = [runs.cell(d, w, v, k) for k in keys]
                diffs = [Cell(None) if v == plain or plain is None or b is None
                         else _significant(_difference(runs, d, w, v, k, plain)) for k in ("accuracy", "miou")]
                row += [cells[0] if ok or not _number(cells[0].value) else _at_chance(cells[0]), *cells[1:], *diffs,
                        runs.count(d, w, v), Cell("yes" if ok else "no")]
        rows += group
    caption = ("Table 2. Classification and visual explainability (test split, macro averages, mIoU of the "
               "predicted-class CAM; n/a: the method has no CAM (MLLM baselines) or no faithful form on the backbone "
               "(CDEP on ViT)). \"- plain\": the paired difference to the plain backbone (-), per seed then averaged; "
               "bold where its 95 % interval excludes 0.")
    return Table("table2", caption + runs.profile_note(mllm=True) + seeds_note(rows) + chance_note(rows), header, rows, csv_only)


TEXT_KEYS = [("clipscore", "CLIPScore"), ("bleu_4", "B4"), ("meteor", "M"), ("rouge_l", "R"), ("spice", "S"), ("cider", "C"),
             ("grounding_cam", "G-CAM"), ("grounding_target", "G-target")]
GROUNDING_NOTE = (" G-CAM, G-target (docs/evaluation.md \"Grounding\"): of the explanations that name a position, the share of the "
                  "CAM's mass inside the named region (a uniform CAM scores the region's area) and the share whose "
                  "region holds the true target's centre (synthetic benchmark only).")
TEXT_HEAD_NOTE = {"tiny": "the tiny random-init text head (a 2-layer Llama and CLIP from config, not Vicuna / CLIP-ViT-L)"}


def _status_note(runs: Runs, key: str, name: str) -> str:
    """Why a text metric shows n/a, as evaluation recorded it (without the parenthesised details)."""
    reasons = sorted({m[key].removeprefix("unavailable: ").split(" (")[0] for d in runs.datasets for b in runs.backbones
                      for v in runs.variants for m in runs.found(d, b, v)
                      if isinstance(m.get(key), str) and m[key].startswith("unavailable")})
    return f" {name} n/a: {'; '.join(reasons)}." if reasons else ""


def table3(runs: Runs) -> Table:
    header = ["Method", "Backbone"]
    for d in runs.datasets:
        header += [f"{DATASET_NAMES.get(d, d)} {n}" for _, n in TEXT_KEYS] + [f"{DATASET_NAMES.get(d, d)} Seeds"]
    seed_cols = frozenset(i for i, h in enumerate(header) if h.endswith(" Seeds"))
    rows, heads = [], set()
    writing_mllm = [v for v in runs.mllm_variants() if runs.writes_explanations(v)]
    for v in writing_mllm:
        row = [Cell(runs.mllm_name(v)), Cell(runs.mllm_label())]
        for d in runs.datasets:
            w = runs.mllm_backbone(d, v)
            row += ([runs.cell(d, w, v, k) for k, _ in TEXT_KEYS] + [runs.count(d, w, v)]
                    if w else [Cell(None)] * len(TEXT_KEYS) + [Cell(0, "{:d}")])
        rows.append(row)
    for b in runs.backbones:
        for v in runs.classifier_variants(lambda v: runs.writes_explanations(v) and runs.config(v).explainer is None):
            row = [Cell(runs.label(v)), Cell(runs.backbone(b))]
            for d in runs.datasets:
                row += [runs.cell(d, b, v, k) for k, _ in TEXT_KEYS] + [runs.count(d, b, v)]
                heads |= {m["text_head_profile"] for m in runs.found(d, b, v) if "text_head_profile" in m}
            rows.append(row)
    mark_best(rows, [i for i in range(2, len(header)) if i not in seed_cols])
    caption = "Table 3. Textual explanation quality (B4, M, R, S, C: BLEU-4, METEOR, ROUGE-L, SPICE, CIDEr)." + GROUNDING_NOTE
    if heads & TEXT_HEAD_NOTE.keys():
        caption += f" Explanations from {'; '.join(TEXT_HEAD_NOTE[h] for h in sorted(heads & TEXT_HEAD_NOTE.keys()))}."
    caption += _status_note(runs, "clipscore_status", "CLIPScore") + _status_note(runs, "spice_status", "SPICE")
    return Table("table3", caption + runs.profile_note(mllm=bool(writing_mllm)) + seeds_note(rows), header, rows, seed_cols)


def _difference(runs: Runs, d: str, b: str, v: str, metric: str, reference: str | None = None) -> Cell:
    """v's value minus the reference's (default: MEGL's): per seed both have, then the mean (± the
    half-width of the paired differences' 95 % t-interval)."""
    reference = reference or runs.reference()
    if reference is None:
        return Cell(None)  # no full MEGL variant in the grid to compare with
    diffs = []
    for s in runs.seeds:
        own, ref = runs.test.get(RunKey(d, b, v, s), {}), runs.test.get(RunKey(d, b, reference, s), {})
        if _number(own.get(metric)) and _number(ref.get(metric)):
            diffs.append(float(own[metric]) - float(ref[metric]))
    cell = aggregate(diffs, "{:+.4f}")
    return cell if diffs else Cell(None)


def table4(runs: Runs) -> Table:
    """Ablation (the paper's Table 4, with mIoU next to accuracy): every variant against MEGL, as
    differences (a percentage of a near-zero value says nothing)."""
    header = ["Dataset", "Backbone", "Modules", "Accuracy", "Accuracy - MEGL", "mIoU", "mIoU - MEGL", "Seeds"]
    rows = []
    for d in runs.datasets:
        for b in runs.backbones:
            for v in reversed(runs.ablation_variants()):
                acc, miou = runs.cell(d, b, v, "accuracy"), runs.cell(d, b, v, "miou")
                if acc.value is not None and not runs.above_chance(d, b, v):
                    _at_chance(acc)
                own = v == runs.reference()
                rows.append([Cell(DATASET_NAMES.get(d, d)), Cell(runs.backbone(b)), Cell(runs.label(v)),
                             acc, Cell(None) if own else _significant(_difference(runs, d, b, v, "accuracy")),
                             miou, Cell(None) if own else _significant(_difference(runs, d, b, v, "miou")), runs.count(d, b, v)])
    caption = ("Table 4. Ablation: test accuracy and mIoU, and their difference from MEGL's (per seed, then "
               "averaged; absolute, not relative; bold where its 95 % interval excludes 0).")
    return Table("table4", caption + runs.profile_note() + seeds_note(rows) + chance_note(rows), header, rows)


def table5(runs: Runs) -> Table:
    """MEGL against the MLLM baselines: size and speed at batch 1, and the speed-up over
    LLaVA-Fine-tune-CoT as the paper gives it (its FPS over theirs, same dataset and machine)."""
    header = ["Model", "Dataset", "Parameters", "Latency (ms)", "FPS", "Speedup", "Latency with explanation (ms)",
              "FPS with explanation", "Device", "Seeds"]
    rows = []
    megl, writing_mllm = runs.reference(), [v for v in runs.mllm_variants() if runs.writes_explanations(v)]
    for d in runs.datasets:
        models = [(f"MEGL-{runs.backbone(b)}", b, megl) for b in runs.backbones if megl is not None]
        models += [(runs.mllm_name(v), w, v) for v in runs.mllm_variants() if (w := runs.mllm_backbone(d, v))]
        cot = writing_mllm[0] if writing_mllm else None  # the paper's reference: LLaVA-Fine-tune-CoT
        cot_where = runs.mllm_backbone(d, cot) if cot else None
        cot_fps = runs.cell(d, cot_where, cot, "fps", efficiency=True).value if cot_where else None
        for name, b, v in models:
            found = runs.found(d, b, v, efficiency=True)
            mllm = runs.method(v).model == "mllm"
            params = runs.cell(d, b, v, "parameters_total" if mllm else "parameters_classifier", efficiency=True).value
            fps = runs.cell(d, b, v, "fps", "{:.2f}", efficiency=True)
            speedup = Cell(fps.value / cot_fps, "{:.2f}x") if _number(fps.value) and _number(cot_fps) and v != cot else Cell(None)
            devices = sorted({f"{e['device']} {e['dtype']}" for e in found if "device" in e and "dtype" in e})
            rows.append([
                Cell(name), Cell(DATASET_NAMES.get(d, d)), Cell(f"{params / 1e6:.2f}M" if _number(params) else None),
                runs.cell(d, b, v, "latency_ms", "{:.2f}", efficiency=True), fps, speedup,
                *(runs.cell(d, b, v, k, "{:.2f}", efficiency=True) for k in ("latency_explained_ms", "fps_explained")),
                Cell("; ".join(devices) if devices else None), Cell(len(found), "{:d}"),
            ])
    caption = ("Table 5. Efficiency at batch size 1: classification only (one forward, no decoding, as the paper), and "
               "with the explanation (MEGL: Grad-CAM + generated text; MLLM: the greedy answer). Speedup: FPS over "
               "LLaVA-Fine-tune-CoT's on the same dataset and machine.")
    return Table("table5", caption + runs.profile_note(mllm=True) + seeds_note(rows), header, rows, frozenset({len(header) - 1}))


FAITH_KEYS = [("deletion_auc", "Deletion AUC", False), ("insertion_auc", "Insertion AUC", True),
              ("average_drop", "Average Drop (%)", False), ("increase_in_confidence", "Increase in Conf. (%)", True),
              ("pointing_game", "Pointing Game", True), ("relevance_mass", "Relevance Mass", True)]


def table_faithfulness(runs: Runs) -> Table:
    header = ["Dataset", "Backbone", "Method"] + [n for _, n, _ in FAITH_KEYS] + ["Seeds"]
    rows = []
    for d in runs.datasets:
        for b in runs.backbones:
            variants = runs.classifier_variants()
            ranked = [runs.above_chance(d, b, v) for v in variants]
            group = [[Cell(DATASET_NAMES.get(d, d)), Cell(runs.backbone(b)),
                      Cell(runs.label(v), note="" if ok else DAGGER)]
                     + [runs.cell(d, b, v, k) for k, _, _ in FAITH_KEYS] + [runs.count(d, b, v)]
                     for v, ok in zip(variants, ranked)]
            mark_best(group, range(3, 3 + len(FAITH_KEYS)), {3 + i: hi for i, (_, _, hi) in enumerate(FAITH_KEYS)}, ranked)
            rows += group
    caption = "Faithfulness (RISE deletion/insertion, Grad-CAM++ average drop / increase in confidence) and localisation extras."
    return Table("faithfulness", caption + runs.profile_note() + seeds_note(rows) + chance_note(rows), header, rows,
                 frozenset({len(header) - 1}))


def build_tables(runs: Runs) -> list[Table]:
    return [table1(runs), table2(runs), table3(runs), table4(runs), table5(runs), table_faithfulness(runs)]


def write_tables(tables: list[Table], out: Path) -> None:
    for t in tables:
        write_bytes(out / f"{t.name}.md", t.markdown().encode())
        write_bytes(out / f"{t.name}.csv", t.csv().encode())
        write_bytes(out / f"{t.name}.tex", t.latex().encode())
