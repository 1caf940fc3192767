from pathlib import Path

import pytest

from megl.data.readers import image_candidates, read_layout
from megl.data.records import DataError
from layouts import BUILDERS


def read(layout, root: Path):
    BUILDERS[layout](root)
    visual = root / ("Annotations/visual" if layout.startswith("vqax") else "visual")
    return read_layout(layout, root, root / "images", visual)


def test_vqax_park(tmp_path):
    res = read("vqax_park", tmp_path)
    assert not res.rejections
    by_id = {s.sample_id: s for s in res.samples}
    assert set(by_id) == {"101", "102", "201", "301"}
    s = by_id["201"]
    assert s.source_split == "val"
    assert s.image_name == "COCO_val2014_000000000021.jpg"
    assert s.question == "What type of vehicle is shown?"
    assert s.answers == ("bus",) * 10
    assert s.explanations == ("the big yellow vehicle carries people", "it is a bus")
    assert res.empty_explanations_dropped == 1
    assert [f.name for f in s.visual_files] == ["201.npz"] and [f.name for f in by_id["301"].visual_files] == ["301.npy"]
    assert by_id["101"].visual_files == ()
    assert by_id["102"].image_name == "COCO_train2014_000000000012.jpg"


def test_vqax_nlx(tmp_path):
    res = read("vqax_nlx", tmp_path)
    assert not res.rejections
    by_id = {s.sample_id: s for s in res.samples}
    assert by_id["301"].question == "What is this animal?"
    assert by_id["201"].explanations == ("it is long and yellow", "a bus")
    assert len(by_id["101"].answers) == 10 and by_id["101"].source_split == "train"


def test_actx_park(tmp_path):
    res = read("actx_park", tmp_path)
    assert not res.rejections
    by_id = {s.sample_id: s for s in res.samples}
    assert by_id["a1"].image_name == "015601864.jpg"
    assert by_id["a1"].answers == ("bicycling, mountain",)
    assert by_id["a1"].explanations == ("he rides a bike on a trail",)  # a plain string in the file
    assert [f.name for f in by_id["a3"].visual_files] == ["a3.npz"]  # found by key
    assert [f.name for f in by_id["a4"].visual_files] == ["015601867.npy"]  # found by image name


def test_actx_nlx(tmp_path):
    res = read("actx_nlx", tmp_path)
    assert not res.rejections
    by_id = {s.sample_id: s for s in res.samples}
    assert by_id["k3"].answers == ("fishing",) and by_id["k3"].explanations == ("holds a rod", "at a lake")
    assert all(s.visual_files == () for s in res.samples)


def test_coco_images_are_found_flat_or_in_their_set_folder(tmp_path):
    names = [p.relative_to(tmp_path).as_posix() for p in image_candidates("vqax_park", tmp_path, "COCO_val2014_000000000021.jpg")]
    assert names == ["COCO_val2014_000000000021.jpg", "val2014/COCO_val2014_000000000021.jpg"]


def test_missing_split_file_is_a_clear_error(tmp_path):
    BUILDERS["actx_park"](tmp_path)
    (tmp_path / "textual" / "exp_test_split.json").unlink()
    with pytest.raises(DataError, match="exp_test_split.json"):
        read_layout("actx_park", tmp_path, tmp_path / "images", tmp_path / "visual")


def test_missing_raw_dir(tmp_path):
    with pytest.raises(DataError, match="raw data directory not found"):
        read_layout("vqax_park", tmp_path / "nope", tmp_path, tmp_path)
