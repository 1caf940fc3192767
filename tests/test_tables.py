"""Tables from metrics JSON: paper layout, best bold / second underlined, deterministic bytes."""

import json

from megl.tables import build_tables, write_tables

VARIANTS = ["megl", "visual_text", "text", "visual", "baseline"]


def write_metrics(root):
    (root / "object_me").mkdir(parents=True)
    (root / "object_me/dataset.json").write_text(json.dumps({"table1": {"samples": 4790, "textual": 4790, "visual": 402, "classes": 40}}))
    for b, base in (("resnet18", 0.70), ("vit_b16", 0.80)):
        (root / "object_me" / b).mkdir()
        for i, v in enumerate(VARIANTS):
            m = {"accuracy": base + 0.01 * (4 - i), "precision": 0.5, "recall": 0.5, "f1": 0.5, "miou": 0.3 + 0.01 * i,
                 "deletion_auc": 0.2, "insertion_auc": 0.6, "average_drop": 10.0, "increase_in_confidence": 20.0,
                 "pointing_game": 0.7, "relevance_mass": 0.4}
            if v in ("megl", "visual_text", "text"):
                m |= {"clipscore": 0.6, "bleu_4": 0.3 + 0.01 * i, "meteor": 0.3, "rouge_l": 0.5, "spice": None, "cider": 1.5}
            (root / "object_me" / b / f"{v}.json").write_text(json.dumps(m))
        (root / "object_me" / b / "efficiency_megl.json").write_text(json.dumps(
            {"parameters_classifier": 11_200_000, "latency_ms": 8.5, "fps": 117.4, "latency_explained_ms": 20.0,
             "fps_explained": 50.0, "device": "cpu", "dtype": "float32"}))


def test_tables_layout_marks_and_determinism(tmp_path):
    write_metrics(tmp_path / "m")
    tables = build_tables(tmp_path / "m", ["object_me"], ["resnet18", "vit_b16"], VARIANTS)
    write_tables(tables, tmp_path / "a")
    write_tables(build_tables(tmp_path / "m", ["object_me"], ["resnet18", "vit_b16"], VARIANTS), tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(f"{t}.{ext}" for t in ("table1", "table2", "table3", "table4", "table5", "faithfulness") for ext in ("md", "csv", "tex"))
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)

    t1 = (tmp_path / "a/table1.md").read_text()
    assert "| Object-ME | 4,790 | 4,790 | 402 | 40 |" in t1
    t2 = (tmp_path / "a/table2.md").read_text().splitlines()
    resnet = [line for line in t2 if line.startswith("| ResNet18")]
    assert [line.split(" | ")[1] for line in resnet] == ["-", "Visual", "Text", "Visual+Text", "MEGL"]
    assert "**0.7400**" in resnet[-1] and "<u>0.7300</u>" in resnet[-2]  # MEGL best, Visual+Text second (per backbone)
    assert "**0.8400**" in [line for line in t2 if line.startswith("| ViT-B/16")][-1]
    tex = (tmp_path / "a/table2.tex").read_text()
    assert "\\textbf{0.7400}" in tex and "\\underline{0.7300}" in tex
    csv = (tmp_path / "a/table2.csv").read_text()
    assert "ResNet18,MEGL,0.7400" in csv and "**" not in csv
    t4 = (tmp_path / "a/table4.md").read_text()
    assert "| Object-ME | ResNet18 | - | 0.7000 | -5.41% |" in t4
    t3 = (tmp_path / "a/table3.md").read_text()
    assert "| MEGL | ResNet18 |" in t3 and " - |" in t3  # SPICE unavailable shows as '-'
    assert "11.20M" in (tmp_path / "a/table5.md").read_text()


def test_missing_metrics_show_as_dash(tmp_path):
    write_metrics(tmp_path / "m")
    (tmp_path / "m/object_me/vit_b16/text.json").unlink()
    t2 = build_tables(tmp_path / "m", ["object_me"], ["resnet18", "vit_b16"], VARIANTS)[1].markdown()
    assert "| ViT-B/16 | Text | - | - | - | - | - |" in t2
