import json

import numpy as np
import pandas as pd
import pytest

from megl.config import SaliencyConfig
from megl.data.records import DataError
from megl.data.saliency import build_saliency, resize_area
from layouts import dataset_cfg

SAL = SaliencyConfig(grid_sizes=(4, 2), eps=1e-8)


def blob(y, x, size=16):
    m = np.zeros((3, size, size), np.float32)
    m[:, y : y + 4, x : x + 4] = 1.0
    return m


def make_dataset(tmp_path, rows):
    """rows: (split, map or None). Writes raw maps, a manifest and an 8-px image store."""
    raw, data = tmp_path / "raw", tmp_path / "data"
    (raw / "visual").mkdir(parents=True)
    data.mkdir()
    records = []
    for i, (split, maps) in enumerate(rows):
        rel = None
        if maps is not None:
            rel = f"visual/s{i}.npy"
            np.save(raw / rel, maps)
        records.append({"sample_id": f"s{i}", "split": split, "has_visual": maps is not None, "visual_path": rel})
    pd.DataFrame(records).to_parquet(data / "manifest.parquet")
    np.save(data / "images.npy", np.zeros((len(rows), 8, 8, 3), np.uint8))
    return dataset_cfg("actx_park", raw), data


def build(cfg, data, tmp_path, sal=SAL):
    report = build_saliency("t", cfg, sal, data, data / "saliency", tmp_path / "saliency.json")
    return report, data / "saliency"


def test_resize_area_averages_blocks():
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_allclose(resize_area(a, 2), [[2.5, 4.5], [10.5, 12.5]])
    assert resize_area(a, 8).shape == (8, 8)  # growing: bilinear


def test_maps_are_aligned_normalised_and_resized(tmp_path):
    cfg, data = make_dataset(tmp_path, [("train", blob(0, 0)), ("train", None), ("test", blob(12, 12))])
    report, out = build(cfg, data, tmp_path)
    index = np.load(out / "index.npy")
    assert index.tolist() == [0, -1, 1]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["resolutions"] == [2, 4, 8]  # CAM grids and the image size
    for r in (2, 4, 8):
        maps = np.load(out / f"maps_{r}.npy")
        assert maps.shape == (2, r, r) and maps.dtype == np.float32
        assert maps.min() >= 0 and np.allclose(maps.max(axis=(1, 2)), 1.0, atol=1e-6)
    m4 = np.load(out / "maps_4.npy")
    assert m4[0, 0, 0] == pytest.approx(1.0) and m4[0, 3, 3] == 0  # blob top-left stays top-left
    assert m4[1, 3, 3] == pytest.approx(1.0)
    assert report["maps_in"] == 2 and report["maps_aggregated"] == 2 and report["maps_rejected"] == 0


def test_mean_map_uses_train_maps_only(tmp_path):
    rows = [("train", blob(0, 0)), ("train", blob(0, 12)), ("val", blob(12, 0)), ("test", blob(12, 12))]
    cfg, data = make_dataset(tmp_path / "a", rows)
    build(cfg, data, tmp_path / "a")
    mean = np.load(data / "saliency/mean_map_4.npy")
    # the plain average of the two train maps (each blob fills one 4x4 cell)
    np.testing.assert_allclose(mean, [[0.5, 0, 0, 0.5], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]], atol=1e-6)
    # The test and val maps change completely: the mean map must not move.
    rows2 = rows[:2] + [("val", blob(4, 4)), ("test", blob(8, 8) * 3)]
    cfg2, data2 = make_dataset(tmp_path / "b", rows2)
    build(cfg2, data2, tmp_path / "b")
    np.testing.assert_array_equal(np.load(data2 / "saliency/mean_map_4.npy"), mean)


def test_no_train_map_is_a_clear_error(tmp_path):
    cfg, data = make_dataset(tmp_path, [("train", None), ("test", blob(0, 0))])
    with pytest.raises(DataError, match="no train-split sample has a visual map"):
        build(cfg, data, tmp_path)
    assert not (data / "saliency").exists()


def test_map_broken_after_extraction_is_counted_or_stops(tmp_path):
    cfg, data = make_dataset(tmp_path, [("train", blob(0, 0)), ("train", blob(4, 4))])
    np.save(cfg.raw_path / "visual/s1.npy", np.full((3, 16, 16), np.nan))
    report, out = build(cfg, data, tmp_path)
    assert report["maps_rejected_by_reason"]["visual_nan"] == 1
    assert np.load(out / "index.npy").tolist() == [0, -1]
    import dataclasses

    with pytest.raises(DataError, match="s1.npy"):
        build(dataclasses.replace(cfg, on_bad_sample="error"), data, tmp_path)
