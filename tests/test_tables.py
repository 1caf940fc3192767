"""Tables from metrics JSON: paper layout, Tables 2 and 4 bold only paired differences whose 95 %
interval excludes 0 (no ranking of means), the others best bold / second underlined (never a tie,
never a model at chance), tiny profiles labelled, unavailable metrics as n/a, mean ± 95 % t-interval
over seeds, partial grids, deterministic bytes."""

import json
import subprocess
import sys

import yaml

from pathlib import Path

from megl.config import load_params
from megl.layout import RunKey, dataset_report, run_layout
from megl.tables import Cell, build_tables, load_runs, mark_best, write_tables

# which method each variant runs (names, groups, order): the repository's variants block
CONFIGS = load_params(Path(__file__).resolve().parents[1] / "params.yaml").variants

VARIANTS = ["megl", "visual_text", "text", "visual", "baseline"]
BACKBONES = ["resnet18", "vit_b16"]


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_metrics(root, seed=0, shift=0.0):
    """Test and efficiency metrics of every run for one seed; `shift` moves accuracy and mIoU."""
    write_json(dataset_report(root, "object_me"), {"table1": {"samples": 4790, "textual": 4790, "visual": 402, "classes": 40}})
    for b, base in (("resnet18", 0.70), ("vit_b16", 0.80)):
        for i, v in enumerate(VARIANTS):
            lay = run_layout(root, RunKey("object_me", b, v, seed))
            m = {"accuracy": base + 0.01 * (4 - i) + shift, "precision": 0.5, "recall": 0.5 + 0.01 * i, "f1": 0.5 + 0.01 * i,
                 "miou": 0.3 + 0.01 * i + shift, "deletion_auc": 0.2, "insertion_auc": 0.6, "average_drop": 10.0,
                 "increase_in_confidence": 20.0, "pointing_game": 0.7, "relevance_mass": 0.4,
                 "backbone_profile": "tiny", "backbone_pretrained": False, "test_samples": 500, "chance_accuracy": 0.1}
            if v in ("megl", "visual_text", "text"):
                m |= {"clipscore": None, "clipscore_status": "unavailable: no local CLIP weights (evaluate.clipscore_clip_path)",
                      "bleu_4": 0.3 + 0.01 * i, "meteor": 0.3, "rouge_l": 0.5, "spice": None,
                      "spice_status": "unavailable: Stanford CoreNLP jars missing (x.jar)", "cider": 1.5,
                      "text_head_profile": "tiny"}
            write_json(lay.test_metrics, m)
            write_json(lay.efficiency, {"parameters_classifier": 11_200_000, "latency_ms": 8.5 + 10 * shift, "fps": 117.4,
                                        "latency_explained_ms": 20.0, "fps_explained": 50.0, "device": "cpu", "dtype": "float32"})


def tables(root, seeds=(0,), variants=VARIANTS, backbones=BACKBONES):
    return {t.name: t for t in build_tables(load_runs(root, ["object_me"], backbones, variants, seeds, CONFIGS))}


def test_tables_layout_marks_and_determinism(tmp_path):
    write_metrics(tmp_path)
    runs = load_runs(tmp_path, ["object_me"], BACKBONES, VARIANTS, [0], CONFIGS)
    assert runs.missing == [] and len(runs.test) == 10
    write_tables(build_tables(runs), tmp_path / "a")
    write_tables(build_tables(load_runs(tmp_path, ["object_me"], BACKBONES, VARIANTS, [0], CONFIGS)), tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(f"{t}.{ext}" for t in ("table1", "table2", "table3", "table4", "table5", "faithfulness") for ext in ("md", "csv", "tex"))
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)

    t1 = (tmp_path / "a/table1.md").read_text()
    assert "| Object-ME | 4,790 | 4,790 | 402 | 40 |" in t1
    t2 = (tmp_path / "a/table2.md").read_text().splitlines()
    assert t2[1] == ("| Backbone | Method | Object-ME Accuracy | Object-ME Precision | Object-ME Recall | Object-ME F1 | "
                     "Object-ME mIoU | Object-ME Accuracy - plain | Object-ME mIoU - plain |")
    resnet = [line for line in t2 if line.startswith("| ResNet18 (tiny)")]  # the tiny profile says so
    assert [line.split(" | ")[1] for line in resnet] == ["-", "Visual", "Text", "Visual+Text", "MEGL"]
    # one seed: the paired differences to the plain backbone, no interval, nothing bold, nothing ranked
    assert resnet[-1] == "| ResNet18 (tiny) | MEGL | 0.7400 | 0.5000 | 0.5000 | 0.5000 | 0.3000 | +0.0400 | -0.0400 |"
    assert resnet[0] == "| ResNet18 (tiny) | - | 0.7000 | 0.5000 | 0.5400 | 0.5400 | 0.3400 | - | - |"
    assert "**" not in "".join(t2[2:]) and "<u>" not in "".join(t2)
    assert "±" not in "".join(t2) and "One seed per cell: single runs, no spread" in t2[0]
    assert "(tiny): random-init tiny profile" in t2[0] and "bold where its 95 % interval excludes 0" in t2[0]
    tex = (tmp_path / "a/table2.tex").read_text()
    assert "\\textbf" not in tex and "\\underline" not in tex and "Seeds" not in tex
    csv = (tmp_path / "a/table2.csv").read_text().splitlines()
    assert csv[0].endswith("Object-ME mIoU,Object-ME Accuracy - plain,Object-ME mIoU - plain,Object-ME Seeds,Object-ME Above chance")
    assert "ResNet18 (tiny),MEGL,0.7400,0.5000,0.5000,0.5000,0.3000,+0.0400,-0.0400,1,yes" in csv and "**" not in "".join(csv)
    t4 = (tmp_path / "a/table4.md").read_text()
    assert "| Dataset | Backbone | Modules | Accuracy | Accuracy - MEGL | mIoU | mIoU - MEGL | Seeds |" in t4
    assert "| Object-ME | ResNet18 (tiny) | MEGL | 0.7400 | - | 0.3000 | - | 1 |" in t4
    assert "| Object-ME | ResNet18 (tiny) | - | 0.7000 | -0.0400 | 0.3400 | +0.0400 | 1 |" in t4  # differences, not %
    t3 = (tmp_path / "a/table3.md").read_text()
    megl3 = next(line for line in t3.splitlines() if line.startswith("| MEGL | ResNet18 (tiny) |"))
    assert megl3.startswith("| MEGL | ResNet18 (tiny) | n/a | ")  # CLIPScore: no local CLIP, no number
    assert "CLIPScore n/a: no local CLIP weights." in t3 and "SPICE n/a: Stanford CoreNLP jars missing." in t3
    assert "tiny random-init text head" in t3 and "**n/a**" not in t3
    t5 = (tmp_path / "a/table5.md").read_text()
    assert "| MEGL-ResNet18 (tiny) | Object-ME | 11.20M | 8.50 | 117.40 | - | 20.00 | 50.00 | cpu float32 |" in t5
    assert (tmp_path / "a/table5.csv").read_text().splitlines()[1].endswith(",cpu float32,1")


def test_missing_metrics_show_as_dash(tmp_path):
    write_metrics(tmp_path)
    run_layout(tmp_path, RunKey("object_me", "vit_b16", "text", 0)).test_metrics.unlink()
    runs = load_runs(tmp_path, ["object_me"], BACKBONES, VARIANTS, [0], CONFIGS)
    assert [lay.key.name for lay in runs.missing] == ["object_me/vit_b16/text/s0"]
    t = {t.name: t for t in build_tables(runs)}
    assert "| ViT-B/16 (tiny) | Text | - | - | - | - | - | - | - |" in t["table2"].markdown()
    assert "ViT-B/16 (tiny),Text,-,-,-,-,-,-,-,0,yes" in t["table2"].csv()
    assert "| Object-ME | ViT-B/16 (tiny) | Text | - | - | - | - | 0 |" in t["table4"].markdown()


def test_two_seeds_mean_and_95_percent_interval(tmp_path):
    write_metrics(tmp_path, seed=0)
    write_metrics(tmp_path, seed=1, shift=0.06)
    t = tables(tmp_path, seeds=(0, 1))
    # ResNet18 MEGL accuracy: seeds 0.74 and 0.80 -> mean 0.77, s = 0.042426, 95 % half-width
    # t_{0.975, 1} s / sqrt(2) = 12.7062 x 0.03 = 0.3812: two seeds say little about a mean ...
    md2 = t["table2"].markdown()
    # ... but the paired difference to the plain backbone is +0.04 in both seeds: it excludes 0, bold
    assert "| ResNet18 (tiny) | MEGL | 0.7700 ± 0.3812 | 0.5000 ± 0.0000 | 0.5000 ± 0.0000 | 0.5000 ± 0.0000 | 0.3300 ± 0.3812 | **+0.0400 ± 0.0000** | **-0.0400 ± 0.0000** |" in md2
    assert "Mean ± half-width of the 95 % t-interval over 2 seeds." in md2.splitlines()[0]
    assert "\\textbf{+0.0400 $\\pm$ 0.0000}" in t["table2"].latex()
    assert "ResNet18 (tiny),MEGL,0.7700,0.5000,0.5000,0.5000,0.3300,+0.0400,-0.0400,2,yes" in t["table2"].csv()  # CSV: the mean, the seed count
    # Table 4: mean accuracy and mIoU; the per-seed differences from MEGL, averaged (seeds move together here)
    md4 = t["table4"].markdown()
    assert "| Object-ME | ResNet18 (tiny) | MEGL | 0.7700 ± 0.3812 | - | 0.3300 ± 0.3812 | - | 2 |" in md4
    assert "| Object-ME | ResNet18 (tiny) | - | 0.7300 ± 0.3812 | **-0.0400 ± 0.0000** | 0.3700 ± 0.3812 | **+0.0400 ± 0.0000** | 2 |" in md4
    # Table 5: latency 8.5 and 9.1 -> 8.80 ± 12.7062 x 0.4243 / sqrt(2) = 3.81
    assert "| MEGL-ResNet18 (tiny) | Object-ME | 11.20M | 8.80 ± 3.81 | 117.40 ± 0.00 |" in t["table5"].markdown()
    # a cell with one of the two seeds: its own value, no ±, and the caption says the counts differ
    run_layout(tmp_path, RunKey("object_me", "resnet18", "megl", 1)).test_metrics.unlink()
    t = tables(tmp_path, seeds=(0, 1))
    md4 = t["table4"].markdown()
    assert "| Object-ME | ResNet18 (tiny) | MEGL | 0.7400 | - | 0.3000 | - | 1 |" in md4
    assert "| Object-ME | ResNet18 (tiny) | - | 0.7300 ± 0.3812 | -0.0400 | 0.3700 ± 0.3812 | +0.0400 | 2 |" in md4  # seed 0 only
    assert "over 1-2 seeds per cell" in md4.splitlines()[0]


def test_models_at_chance_are_not_ranked_and_ties_get_no_mark(tmp_path):
    """ViT near chance (accuracy 0.11-0.12 on 500 samples, majority class 0.10): daggers, no marks,
    although its numbers differ; ResNet's two best accuracies tie at the shown precision: no bold."""
    write_metrics(tmp_path)
    for i, v in enumerate(VARIANTS):
        vit = run_layout(tmp_path, RunKey("object_me", "vit_b16", v, 0)).test_metrics
        m = json.loads(vit.read_text()) | {"accuracy": 0.11 + 0.0025 * i, "miou": 0.05 + 0.01 * i}
        vit.write_text(json.dumps(m))
    for v, acc in (("megl", 0.80002), ("visual_text", 0.79998)):
        path = run_layout(tmp_path, RunKey("object_me", "resnet18", v, 0)).test_metrics
        path.write_text(json.dumps(json.loads(path.read_text()) | {"accuracy": acc}))
    t = tables(tmp_path)
    md2 = t["table2"].markdown()
    vit = [line for line in md2.splitlines() if line.startswith("| ViT-B/16 (tiny)")]
    assert all("†" in line and "**" not in line and "<u>" not in line for line in vit)
    assert "† not above chance" in md2.splitlines()[0]
    resnet = [line for line in md2.splitlines() if line.startswith("| ResNet18 (tiny)")]
    assert "| 0.8000 |" in resnet[-1] and "| 0.8000 |" in resnet[-2] and not any("**0.8" in line for line in resnet)
    assert "ViT-B/16 (tiny),MEGL,0.1100,0.5000,0.5000,0.5000,0.0500,-0.0100,-0.0400,1,no" in t["table2"].csv()
    faith = [line for line in t["faithfulness"].markdown().splitlines() if "| ViT-B/16 (tiny) |" in line]
    assert all("†" in line and "**" not in line for line in faith)
    md4 = t["table4"].markdown()
    assert "| Object-ME | ViT-B/16 (tiny) | MEGL | 0.1100 † | - |" in md4


def params_file(repo, tmp_path, seeds):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["grid"].update(datasets=["object_me"], backbones=BACKBONES, variants=VARIANTS, seeds=seeds)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def run_tables(repo, *args):
    return subprocess.run([sys.executable, str(repo / "stages/tables.py"), *args], capture_output=True, text=True)


def test_stage_partial_grid(repo, tmp_path):
    """Seed 1 exists for resnet18 only: each missing run is named, the tables come from the rest."""
    write_metrics(tmp_path, seed=0)
    write_metrics(tmp_path, seed=1, shift=0.06)
    for v in VARIANTS:
        run_layout(tmp_path, RunKey("object_me", "vit_b16", v, 1)).test_metrics.unlink()
    params = params_file(repo, tmp_path, [0, 1])
    out = run_tables(repo, "--params", str(params))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:5] == [f"missing: object_me/vit_b16/{v}/s1 (metrics/object_me/vit_b16/{v}/s1/test.json)" for v in VARIANTS]
    assert lines[5].startswith("tables: 15 of 20 runs found, 5 missing -> ")
    md4 = (tmp_path / "tables/table4.md").read_text()
    assert "| Object-ME | ResNet18 (tiny) | MEGL | 0.7700 ± 0.3812 | - | 0.3300 ± 0.3812 | - | 2 |" in md4
    assert "| Object-ME | ViT-B/16 (tiny) | MEGL | 0.8400 | - | 0.3000 | - | 1 |" in md4
    first = {p.name: p.read_bytes() for p in (tmp_path / "tables").iterdir()}

    # overrides narrow the grid: seed 0 only, two variants, into another folder
    out = run_tables(repo, "--params", str(params), "--seeds", "0", "--variants", "megl", "baseline", "--out", str(tmp_path / "t"))
    assert out.returncode == 0 and "missing:" not in out.stdout, out.stdout + out.stderr
    md4 = (tmp_path / "t/table4.md").read_text()
    assert "| Object-ME | ResNet18 (tiny) | MEGL | 0.7400 | - | 0.3000 | - | 1 |" in md4 and "Visual+Text" not in md4

    # same inputs, same bytes
    assert run_tables(repo, "--params", str(params)).returncode == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "tables").iterdir()} == first


def test_stage_without_any_run_fails_clearly(repo, tmp_path):
    params = params_file(repo, tmp_path, [0])
    out = run_tables(repo, "--params", str(params), "--backbones", "resnet18")
    assert out.returncode == 1
    assert out.stdout.count("missing: ") == 5 and "none of the 5 runs has test metrics" in out.stderr
    assert not (tmp_path / "tables").exists()
    out = run_tables(repo, "--params", str(params), "--variants", "nope")
    assert out.returncode == 1 and "--variants ['nope'] not defined" in out.stderr


def test_baselines_and_mllm_rows(tmp_path):
    """Table 2 has the visual-EGL baselines between the plain backbone and MEGL, CDEP n/a on ViT, and
    the MLLM group first (found under the backbone it was trained in); Table 3 the Fine-tune-CoT
    row; Table 5 the LLaVA rows and the speed-up over LLaVA-Fine-tune-CoT."""
    write_metrics(tmp_path)
    base = {"precision": 0.5, "recall": 0.5, "f1": 0.5, "backbone_profile": "tiny", "backbone_pretrained": False,
            "test_samples": 500, "chance_accuracy": 0.1}
    eff = {"device": "cpu", "dtype": "float32", "latency_explained_ms": 30.0, "fps_explained": 33.3}
    for b in BACKBONES:
        lay = run_layout(tmp_path, RunKey("object_me", b, "res_l", 0))
        write_json(lay.test_metrics, base | {"accuracy": 0.69, "miou": 0.35})
        write_json(lay.efficiency, eff | {"parameters_classifier": 11_200_000, "latency_ms": 8.5, "fps": 117.4})
    write_json(run_layout(tmp_path, RunKey("object_me", "vit_b16", "cdep", 0)).test_metrics, {"not_applicable": "no CD for ViT"})
    write_json(run_layout(tmp_path, RunKey("object_me", "resnet18", "cdep", 0)).test_metrics, base | {"accuracy": 0.68, "miou": 0.36})
    for v, acc, fps in (("llava", 0.6, 10.0), ("finetune_cot", 0.62, 5.0)):
        lay = run_layout(tmp_path, RunKey("object_me", "resnet18", v, 0))
        m = base | {"accuracy": acc, "model_family": "llava", "mllm_profile": "tiny"}
        if v == "finetune_cot":
            m |= {"bleu_4": 0.2, "meteor": 0.2, "rouge_l": 0.3, "cider": 0.5, "clipscore": None, "spice": None}
        write_json(lay.test_metrics, m)
        write_json(lay.efficiency, eff | {"parameters_total": 300_000, "latency_ms": 1000 / fps, "fps": fps})
        write_json(run_layout(tmp_path, RunKey("object_me", "vit_b16", v, 0)).test_metrics, {"not_applicable": "trained once"})
    variants = VARIANTS + ["cdep", "res_l", "llava", "finetune_cot"]
    runs = load_runs(tmp_path, ["object_me"], BACKBONES, variants, [0], CONFIGS)
    write_tables(build_tables(runs), tmp_path / "t")
    t2 = (tmp_path / "t/table2.md").read_text().splitlines()[3:]
    assert [line.split(" | ")[:2] for line in t2[:2]] == [["| LLaVA (tiny)", "-"], ["| LLaVA (tiny)", "Fine-tune-CoT"]]
    assert "| n/a |" in t2[0]  # no CAM: mIoU n/a, not a number
    resnet = [line.split(" | ")[1] for line in t2 if line.startswith("| ResNet18")]
    assert resnet == ["-", "CDEP", "RES-L", "Visual", "Text", "Visual+Text", "MEGL"]
    vit_cdep = next(line for line in t2 if line.startswith("| ViT-B/16 (tiny) | CDEP |"))
    assert vit_cdep.count("n/a") == 5
    assert "not LLaVA-1.5-7B" in (tmp_path / "t/table2.md").read_text()
    t3 = (tmp_path / "t/table3.md").read_text()
    assert "| LLaVA (tiny)-Fine-tune-CoT | LLaVA (tiny) | n/a | 0.2000 |" in t3
    t5 = (tmp_path / "t/table5.md").read_text()
    assert "| MEGL-ResNet18 (tiny) | Object-ME | 11.20M | 8.50 | 117.40 | 23.48x |" in t5
    assert "| LLaVA (tiny) | Object-ME | 0.30M | 100.00 | 10.00 | 2.00x |" in t5
    assert "| LLaVA (tiny)-Fine-tune-CoT | Object-ME | 0.30M | 200.00 | 5.00 | - |" in t5
    t4 = (tmp_path / "t/table4.md").read_text()
    assert "CDEP" not in t4 and "LLaVA" not in t4  # the ablation is MEGL's own terms


def test_marks_only_ranks_beyond_noise():
    """A single row, one seed per cell (no interval), or overlapping intervals: no mark; the best
    is bold only where its interval lies beyond the runner-up's, the second only beyond the third's."""
    def marks(*cells, higher=True):
        rows = [[c] for c in cells]
        mark_best(rows, [0], {0: higher})
        return [r[0].mark for r in rows]

    assert marks(Cell(0.9, half=0.01)) == [""]
    assert marks(Cell(0.9), Cell(0.5), Cell(0.1)) == ["", "", ""]  # one seed each
    assert marks(Cell(0.9, half=0.1), Cell(0.75, half=0.1)) == ["", ""]  # 0.8 < 0.85: overlapping
    assert marks(Cell(0.9, half=0.01), Cell(0.5, half=0.01)) == ["best", ""]
    assert marks(Cell(0.5, half=0.01), Cell(0.9, half=0.01), Cell(0.7, half=0.01)) == ["", "best", "second"]
    assert marks(Cell(0.9, half=0.01), Cell(0.7, half=0.15), Cell(0.6, half=0.01)) == ["best", "", ""]
    assert marks(Cell(0.1, half=0.01), Cell(0.3, half=0.01), higher=False) == ["best", ""]
