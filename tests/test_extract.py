"""Extraction end to end on hand-made fixtures, and every kind of bad input, under both policies."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from megl.config import SplitConfig
from megl.data.extract import extract_dataset
from megl.data.records import DataError
from layouts import BUILDERS, dataset_cfg, write_json

SPLIT = SplitConfig(seed=0, val=0.0, test=0.0)


def run(cfg, tmp_path: Path):
    out, report = tmp_path / "out", tmp_path / "metrics" / "dataset.json"
    extract_dataset("fixture", cfg, SPLIT, out, report)
    manifest = pd.read_parquet(out / "manifest.parquet")
    return manifest, json.loads(report.read_text()), out


def build(layout, tmp_path, **overrides):
    raw = BUILDERS[layout](tmp_path / "raw")
    return raw, dataset_cfg(layout, raw, **overrides)


@pytest.mark.parametrize("layout", sorted(BUILDERS))
def test_every_layout_extracts(layout, tmp_path):
    _, cfg = build(layout, tmp_path)
    manifest, report, out = run(cfg, tmp_path)
    n = len(manifest)
    assert report["samples"] == {"in": n, "kept": n, "rejected": 0, "rejected_by_reason": report["samples"]["rejected_by_reason"]}
    assert list(manifest.columns)[:8] == ["sample_id", "split", "image_path", "label", "class_id", "explanations", "has_visual", "visual_path"]
    classes = json.loads((out / "classes.json").read_text())
    assert classes == sorted(classes)
    assert [classes[i] for i in manifest["class_id"]] == manifest["label"].tolist()
    images = np.load(out / "images.npy", mmap_mode="r")
    assert images.shape == (n, 16, 16, 3) and images.dtype == np.uint8
    assert report["table1"] == {"samples": n, "textual": n, "visual": int(manifest["has_visual"].sum()), "classes": len(classes)}


def test_vqax_labels_images_and_maps(tmp_path):
    _, cfg = build("vqax_park", tmp_path)
    manifest, report, out = run(cfg, tmp_path)
    rows = manifest.set_index("sample_id")
    assert rows.loc["101", "label"] == "dog" and rows.loc["102", "label"] == "cat" and rows.loc["201", "label"] == "bus"
    assert rows.loc["201", "visual_path"] == "Annotations/visual/val/201.npz"
    assert rows.loc["201", "has_visual"] and not rows.loc["101", "has_visual"]
    assert list(rows.loc["201", "explanations"]) == ["the big yellow vehicle carries people", "it is a bus"]
    assert report["explanations"] == {"total": 5, "empty_dropped": 1}
    bus = np.load(out / "images.npy")[manifest.index[manifest["sample_id"] == "201"][0]]
    assert abs(int(bus[..., 0].mean()) - 230) < 6 and abs(int(bus[..., 2].mean()) - 20) < 12  # the yellow JPEG


def test_actx_coarsening_and_class_filters(tmp_path):
    _, cfg = build("actx_park", tmp_path, coarsen=True, min_samples_per_class=2)
    manifest, report, _ = run(cfg, tmp_path)
    assert manifest["label"].tolist() == ["bicycling"] * 3
    assert report["samples"]["rejected_by_reason"]["class_too_small"] == 1  # the lone "running"
    _, cfg = build("actx_park", tmp_path / "b", max_classes=2)
    manifest, report, _ = run(cfg, tmp_path / "b")
    assert sorted(set(manifest["label"])) == ["bicycling, mountain", "bicycling, road"]
    assert report["samples"]["rejected_by_reason"]["class_over_max"] == 1


def test_off_topic_questions_are_filtered_not_errors(tmp_path):
    raw, cfg = build("vqax_park", tmp_path, on_bad_sample="error")
    qpath = raw / "Questions/v2_OpenEnded_mscoco_train2014_questions.json"
    q = json.loads(qpath.read_text())
    q["questions"][0]["question"] = "Is the dog happy?"
    write_json(qpath, q)
    manifest, report, _ = run(cfg, tmp_path)
    assert "101" not in set(manifest["sample_id"])
    assert report["samples"]["rejected_by_reason"]["off_topic_question"] == 1


# --- bad input: each case breaks one thing in a valid fixture ------------------------------------

def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    write_json(path, data)


def missing_image(raw):
    (raw / "images/COCO_val2014_000000000021.jpg").unlink()
    return "201", "missing_image", "COCO_val2014_000000000021.jpg"


def corrupt_jpeg(raw):
    (raw / "images/COCO_val2014_000000000021.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    return "201", "corrupt_image", "COCO_val2014_000000000021.jpg"


def truncated_jpeg(raw):
    from PIL import Image

    path = raw / "images/COCO_val2014_000000000021.jpg"
    rng = np.random.default_rng(0)  # noisy pixels so the entropy-coded data is long enough to cut
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "201", "corrupt_image", "truncated"


def empty_explanation(raw):
    _edit_json(raw / "Annotations/train_exp_anno.json", lambda d: d.update({"101": ["", "   "]}))
    return "101", "missing_explanation", "train_exp_anno.json"


def missing_explanation_field(raw):
    # ACT-X-like record without its text is covered in test_actx_bad_records; here: VQA-X null entry
    _edit_json(raw / "Annotations/train_exp_anno.json", lambda d: d.update({"101": None}))
    return "101", "missing_explanation", "train_exp_anno.json"


def duplicate_across_files(raw):
    _edit_json(raw / "Annotations/test_exp_anno.json", lambda d: d.update({"101": ["again"]}))
    return "101", "duplicate_id", "test_exp_anno.json"


def duplicate_in_file(raw):
    path = raw / "Annotations/val_exp_anno.json"
    path.write_text(path.read_text().rstrip().rstrip("}") + ', "201": ["repeated"]}')
    return "201", "duplicate_id", "val_exp_anno.json"


def question_missing(raw):
    _edit_json(raw / "Questions/v2_OpenEnded_mscoco_train2014_questions.json", lambda d: d["questions"].pop(0))
    return "101", "missing_question", "train_exp_anno.json"


def answers_missing(raw):
    _edit_json(raw / "Annotations/v2_mscoco_val2014_annotations.json", lambda d: d["annotations"].pop(0))
    return "201", "missing_answers", "val_exp_anno.json"


def map_bad_shape(raw):
    np.save(raw / "Annotations/visual/test/301.npy", np.ones((2, 3, 4, 5)))
    return "301", "visual_bad_shape", "301.npy"


def map_nan(raw):
    np.save(raw / "Annotations/visual/test/301.npy", np.full((20, 20, 3), np.nan))
    return "301", "visual_nan", "301.npy"


def map_all_zero(raw):
    np.save(raw / "Annotations/visual/test/301.npy", np.zeros((20, 20, 3)))
    return "301", "visual_all_zero", "301.npy"


SAMPLE_CASES = [missing_image, corrupt_jpeg, truncated_jpeg, empty_explanation, missing_explanation_field,
                duplicate_across_files, duplicate_in_file, question_missing, answers_missing]
MAP_CASES = [map_bad_shape, map_nan, map_all_zero]


@pytest.mark.parametrize("case", SAMPLE_CASES, ids=lambda f: f.__name__)
def test_bad_sample_is_skipped_and_counted(case, tmp_path):
    raw, cfg = build("vqax_park", tmp_path)
    sample_id, reason, _ = case(raw)
    manifest, report, _ = run(cfg, tmp_path)
    counts = report["samples"]
    assert counts["rejected_by_reason"][reason] == 1
    assert counts["in"] == counts["kept"] + counts["rejected"]
    if reason != "duplicate_id":  # the first occurrence of a duplicate id stays
        assert sample_id not in set(manifest["sample_id"])
    assert any(f"sample '{sample_id}'" in e for e in report["examples"][reason])


@pytest.mark.parametrize("case", SAMPLE_CASES + MAP_CASES, ids=lambda f: f.__name__)
def test_bad_sample_stops_under_error_policy_naming_the_file(case, tmp_path):
    raw, cfg = build("vqax_park", tmp_path, on_bad_sample="error")
    sample_id, reason, needle = case(raw)
    with pytest.raises(DataError) as err:
        run(cfg, tmp_path)
    message = str(err.value)
    assert reason in message and needle in message and repr(sample_id) in message
    assert not (tmp_path / "out").exists() and not (tmp_path / "metrics").exists()


@pytest.mark.parametrize("case", MAP_CASES, ids=lambda f: f.__name__)
def test_bad_map_drops_the_map_not_the_sample(case, tmp_path):
    raw, cfg = build("vqax_park", tmp_path)
    sample_id, reason, _ = case(raw)
    manifest, report, _ = run(cfg, tmp_path)
    row = manifest.set_index("sample_id").loc[sample_id]
    assert not row["has_visual"] and pd.isna(row["visual_path"])
    assert report["visual_maps"]["rejected_by_reason"][reason] == 1
    assert report["samples"]["rejected"] == 0 and report["table1"]["visual"] == 1


@pytest.mark.parametrize("bad_name", ["../outside.jpg", "/etc/passwd", "a/../../outside.jpg"])
def test_image_name_escaping_the_root_is_rejected(bad_name, tmp_path):
    raw, cfg = build("actx_nlx", tmp_path)
    (raw / "outside.jpg").write_bytes((raw / "images/001.jpg").read_bytes())  # exists, must not be read
    _edit_json(raw / "actX_train.json", lambda d: d["k1"].update(image_name=bad_name))
    manifest, report, _ = run(cfg, tmp_path)
    assert "k1" not in set(manifest["sample_id"])
    assert report["samples"]["rejected_by_reason"]["unsafe_path"] == 1
    with pytest.raises(DataError, match="unsafe_path"):
        run(dataclasses.replace(cfg, on_bad_sample="error"), tmp_path / "e")


def test_actx_bad_records(tmp_path):
    raw, cfg = build("actx_park", tmp_path)
    _edit_json(raw / "textual/exp_train_split.json", lambda d: (d["a1"].pop("exp"), d["a2"].update(ans=7)))
    manifest, report, _ = run(cfg, tmp_path)
    assert report["samples"]["rejected_by_reason"]["malformed_record"] == 2
    assert set(manifest["sample_id"]) == {"a3", "a4"}


def test_malformed_json_names_file_and_position(tmp_path):
    raw, cfg = build("vqax_park", tmp_path)
    (raw / "Annotations/val_exp_anno.json").write_text('{"201": ["ok"],\n  "202": ["missing bracket"\n}')
    for policy in ("skip", "error"):  # a broken file is never a per-sample skip
        with pytest.raises(DataError) as err:
            run(dataclasses.replace(cfg, on_bad_sample=policy), tmp_path)
        assert "val_exp_anno.json: malformed JSON at line 3 column 1" in str(err.value)


def test_failed_run_leaves_previous_outputs_untouched(tmp_path):
    raw, cfg = build("vqax_park", tmp_path)
    _, _, out = run(cfg, tmp_path)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    report_before = (tmp_path / "metrics/dataset.json").read_bytes()
    missing_image(raw)
    with pytest.raises(DataError):
        run(dataclasses.replace(cfg, on_bad_sample="error"), tmp_path)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp files either
    assert (tmp_path / "metrics/dataset.json").read_bytes() == report_before


def test_extraction_is_byte_identical_across_runs(tmp_path):
    _, cfg = build("vqax_park", tmp_path)
    _, _, out = run(cfg, tmp_path)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    first_report = (tmp_path / "metrics/dataset.json").read_bytes()
    _, _, out = run(cfg, tmp_path)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert (tmp_path / "metrics/dataset.json").read_bytes() == first_report
