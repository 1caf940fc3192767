import numpy as np
import pytest

from megl.data.visual_maps import BadMap, aggregate, load_annotator_maps
from layouts import heatmaps


@pytest.mark.parametrize(
    "array, expected_shape",
    [
        (heatmaps((3, 20, 24)), (3, 20, 24)),
        (np.moveaxis(heatmaps((3, 20, 24)), 0, 2), (3, 20, 24)),  # (H, W, 3)
        (heatmaps((3, 20, 24))[0], (1, 20, 24)),  # (H, W)
        (heatmaps((3, 8, 8)), (3, 8, 8)),  # small maps: the annotator axis is still the short one
    ],
)
@pytest.mark.parametrize("fmt", ["npy", "npz"])
def test_accepted_shapes_and_formats(tmp_path, array, expected_shape, fmt):
    path = tmp_path / f"m.{fmt}"
    if fmt == "npy":
        np.save(path, array)
    else:
        np.savez(path, whatever_key=array)
    maps = load_annotator_maps(path)
    assert maps.shape == expected_shape and maps.dtype == np.float32


def test_npz_with_one_2d_member_per_annotator(tmp_path):
    m = heatmaps()
    np.savez(tmp_path / "m.npz", b=m[1], a=m[0], c=m[2])
    np.testing.assert_array_equal(load_annotator_maps(tmp_path / "m.npz"), m)  # members in key order


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: np.save(p / "m.npy", np.ones((4, 5, 6, 7))), "visual_bad_shape"),
        (lambda p: np.save(p / "m.npy", np.ones((20, 9, 30))), "visual_bad_shape"),
        (lambda p: np.save(p / "m.npy", np.ones((3, 3, 3))), "visual_bad_shape"),
        (lambda p: np.savez(p / "m.npz", a=np.ones((3, 8, 8)), b=np.ones((3, 8, 8))), "visual_bad_shape"),
        (lambda p: np.save(p / "m.npy", np.full((3, 10, 10), np.nan)), "visual_nan"),
        (lambda p: np.save(p / "m.npy", np.zeros((3, 10, 10))), "visual_all_zero"),
        (lambda p: (p / "m.npy").write_bytes(b"not numpy"), "visual_unreadable"),
        (lambda p: (p / "m.npz").write_bytes(b"PK\x03\x04broken"), "visual_unreadable"),
    ],
)
def test_bad_maps_are_rejected_with_a_reason(tmp_path, make, reason):
    make(tmp_path)
    (path,) = list(tmp_path.iterdir())
    with pytest.raises(BadMap) as err:
        load_annotator_maps(path)
    assert err.value.reason == reason
    assert str(path) in err.value.detail


def test_aggregate_by_hand():
    a = np.array([[0.0, 2.0], [4.0, 4.0]])  # min-max -> [[0, .5], [1, 1]]
    b = np.array([[1.0, 1.0], [1.0, 3.0]])  # min-max -> [[0, 0], [0, 1]]
    constant = np.full((2, 2), 7.0)  # says nothing about location: left out of the average
    out, dropped = aggregate(np.stack([a, b, constant]), eps=1e-8)
    mean = np.array([[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_allclose(out, mean, atol=1e-6)
    assert dropped == 1 and out.dtype == np.float32
