"""The generic layout (one's own data): JSONL and CSV manifests, masks, source splits, every bad input."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from megl.config import SplitConfig
from megl.data.extract import extract_dataset
from megl.data.records import DataError
from megl.data.saliency import build_saliency
from megl.config import SaliencyConfig
from layouts import GENERIC_RECORDS, dataset_cfg, make_generic

SPLIT = SplitConfig(seed=0, val=0.0, test=0.0)


def run(cfg, tmp_path: Path, split=SPLIT):
    out, report = tmp_path / "out", tmp_path / "metrics" / "dataset.json"
    extract_dataset("own", cfg, split, out, report)
    return pd.read_parquet(out / "manifest.parquet"), json.loads(report.read_text()), out


def generic(tmp_path, records=None, fmt="jsonl", **overrides):
    raw = make_generic(tmp_path / "raw", records, fmt)
    return raw, dataset_cfg("generic", raw, **overrides)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_jsonl_and_csv_give_the_same_dataset(fmt, tmp_path):
    _, cfg = generic(tmp_path, fmt=fmt)
    manifest, report, _ = run(cfg, tmp_path)
    rows = manifest.set_index("sample_id")
    assert list(rows.index) == ["4", "dogs/3.jpg", "s1", "s2"]  # sorted ids; no id -> the image path
    assert rows.loc["4", "label"] == "Golden retriever"  # as written, whitespace collapsed
    assert list(rows.loc["s2", "explanations"]) == ["whiskers", "a cat's tail"]
    assert rows.loc["s2", "visual_path"] == "masks/2a.png\nmasks/2b.npy"  # two annotators, two files
    assert rows.loc["s1", "visual_path"] == "masks/1.png" and not rows.loc["4", "has_visual"]
    assert report["samples"]["in"] == 4 and report["samples"]["rejected"] == 0
    assert report["table1"] == {"samples": 4, "textual": 4, "visual": 2, "classes": 3}


def test_masks_of_several_files_are_annotators_of_one_map(tmp_path):
    _, cfg = generic(tmp_path)
    _, _, out = run(cfg, tmp_path)
    report = build_saliency("own", cfg, SaliencyConfig(grid_sizes=(4,), eps=1e-6), out, tmp_path / "sal", tmp_path / "sal.json")
    assert report["maps_aggregated"] == 2 and report["constant_annotator_maps_excluded"] == 0
    maps = np.load(tmp_path / "sal" / "maps_16.npy")
    # the PNG box (x 4..12, y 4..10 of 20x16) lands inside the map, the corners stay empty
    assert maps[0].max() == pytest.approx(1.0, abs=1e-5) and maps[0][0, 0] == 0 and maps[0][-1, -1] == 0


def test_source_splits_are_kept_and_val_carved_from_train(tmp_path):
    records = [{"id": f"t{i}", "image": "cats/1.png", "label": "cat" if i % 2 else "dog", "split": "train",
                "explanations": "x"} for i in range(40)]
    records += [{"id": f"e{i}", "image": "cats/2.png", "label": "cat" if i % 2 else "dog", "split": "test",
                 "explanations": "x"} for i in range(10)]
    _, cfg = generic(tmp_path, records, split_from="source")
    manifest, report, _ = run(cfg, tmp_path, SplitConfig(seed=0, val=0.25, test=0.5))
    split = manifest.set_index("sample_id")["split"]
    assert (split[[f"e{i}" for i in range(10)]] == "test").all()  # test is the source's, whatever split.test says
    assert report["splits"] == {"train": 30, "val": 10, "test": 10}  # val: a quarter of each class's train
    assert manifest[manifest.split == "val"].label.value_counts().to_dict() == {"cat": 5, "dog": 5}


def test_source_splits_need_a_split_on_every_record(tmp_path):
    _, cfg = generic(tmp_path, split_from="source")  # dogs/3.jpg has no split
    with pytest.raises(DataError, match=r"manifest.jsonl: split_from: source, but 1 kept samples have no .*'dogs/3.jpg'"):
        run(cfg, tmp_path)


def _one(**changes):
    record = dict(GENERIC_RECORDS[0], **changes)
    return [record, *GENERIC_RECORDS[1:]]


def _without(key):
    record = {k: v for k, v in GENERIC_RECORDS[0].items() if k != key}
    return [record, *GENERIC_RECORDS[1:]]


# (records, reason): one bad record each; the other three stay
BAD_RECORDS = {
    "missing_label": (_without("label"), "malformed_record"),
    "missing_image_field": (_without("image"), "malformed_record"),
    "unknown_field": (_one(lable="cat"), "malformed_record"),
    "bad_split": (_one(split="training"), "malformed_record"),
    "list_label": (_one(label=["cat"]), "malformed_record"),
    "no_explanation": (_without("explanations"), "missing_explanation"),
    "empty_explanations": (_one(explanations=["", "  "]), "missing_explanation"),
    "image_escapes_root": (_one(image="../outside.png"), "unsafe_path"),
    "absolute_image": (_one(image="/etc/passwd"), "unsafe_path"),
    "visual_escapes_root": (_one(visual="../../outside.npy"), "unsafe_path"),
    "missing_image": (_one(image="cats/none.png"), "missing_image"),
    "duplicate_id": (_one(id="s2"), "duplicate_id"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_bad_record_is_rejected_with_its_reason(case, tmp_path):
    records, reason = BAD_RECORDS[case]
    _, cfg = generic(tmp_path, records)
    manifest, report, _ = run(cfg, tmp_path)
    counts = report["samples"]
    assert counts["rejected_by_reason"][reason] == 1 and counts["kept"] == 3
    assert counts["in"] == counts["kept"] + counts["rejected"] == 4
    with pytest.raises(DataError, match=reason):
        run(dataclasses.replace(cfg, on_bad_sample="error"), tmp_path / "e")


def test_corrupt_image_and_bad_masks(tmp_path):
    raw, cfg = generic(tmp_path)
    (raw / "images/cats/1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (raw / "masks/2a.png").write_bytes(np.zeros(8).tobytes())  # unreadable: drops s2's map, not s2
    manifest, report, _ = run(cfg, tmp_path)
    assert report["samples"]["rejected_by_reason"]["corrupt_image"] == 1
    assert report["visual_maps"]["rejected_by_reason"]["visual_unreadable"] == 1
    assert not manifest.set_index("sample_id").loc["s2", "has_visual"]


def test_masks_of_different_sizes_drop_the_map(tmp_path):
    raw, cfg = generic(tmp_path)
    np.save(raw / "masks/2b.npy", np.ones((5, 5)))
    _, report, _ = run(cfg, tmp_path)
    assert report["visual_maps"]["rejected_by_reason"]["visual_bad_shape"] == 1


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"image": "cats/1.png", "label": "cat", "explanations": "x"}\n{"image": broken\n', r"manifest.jsonl: malformed JSON at line 2"),
    ],
)
def test_a_broken_jsonl_file_stops_naming_the_line(content, message, tmp_path):
    raw, cfg = generic(tmp_path)
    (raw / "manifest.jsonl").write_text(content)
    with pytest.raises(DataError, match=message):
        run(cfg, tmp_path)


def test_csv_header_typo_and_short_rows(tmp_path):
    raw, cfg = generic(tmp_path, fmt="csv")
    text = (raw / "manifest.csv").read_text()
    (raw / "manifest.csv").write_text(text.replace("label", "lable", 1))
    with pytest.raises(DataError, match=r"manifest.csv: unknown column\(s\) \['lable'\]"):
        run(cfg, tmp_path)
    lines = text.splitlines()
    (raw / "manifest.csv").write_text("\n".join([*lines, "s9,cats/1.png,cat"]) + "\n")
    _, report, _ = run(cfg, tmp_path)
    assert report["samples"]["rejected_by_reason"]["malformed_record"] == 1 and report["samples"]["kept"] == 4


def test_one_manifest_exactly(tmp_path):
    raw, cfg = generic(tmp_path)
    (raw / "manifest.csv").write_text("image,label,explanation\n")
    with pytest.raises(DataError, match="both manifest.jsonl and manifest.csv"):
        run(cfg, tmp_path)
    (raw / "manifest.csv").unlink()
    (raw / "manifest.jsonl").unlink()
    with pytest.raises(DataError, match="no manifest.jsonl or manifest.csv"):
        run(cfg, tmp_path)
