import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from megl.data.decoy_fmnist import DEFAULT_ROOT, FILES, add_decoy, load_fashion_mnist, patch_grey, read_idx
from megl.data.records import DataError

REPO = Path(__file__).resolve().parents[1]
GREYS = set(range(30, 256, 25))  # 255 - 25 * class, class 0..9


def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def tiny_images(n: int, seed: int = 0) -> np.ndarray:
    """Random pixels that never equal a patch grey, so 'changed pixels' and 'patch pixels' coincide."""
    values = np.array([v for v in range(256) if v not in GREYS], dtype=np.uint8)
    return np.random.default_rng(seed).choice(values, size=(n, 28, 28))


def write_fmnist(root: Path, n_train: int, n_test: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {
        "train_images": tiny_images(n_train, 1), "train_labels": rng.integers(0, 10, n_train).astype(np.uint8),
        "test_images": tiny_images(n_test, 2), "test_labels": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for key, name in FILES.items():
        write_idx(root / name, arrays[key])
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, gz):
    images = tiny_images(5)
    labels = np.arange(5, dtype=np.uint8)
    got_images = read_idx(write_idx(tmp_path / "img", images, gz))
    got_labels = read_idx(write_idx(tmp_path / "lab", labels, gz))
    assert got_images.dtype == np.uint8 and got_images.shape == (5, 28, 28)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_read_idx_truncated_names_file(tmp_path):
    raw = idx_bytes(tiny_images(3))
    plain = tmp_path / "short-images-idx3-ubyte"
    plain.write_bytes(raw[:-10])
    with pytest.raises(DataError, match="short-images-idx3-ubyte.*truncated"):
        read_idx(plain)
    cut_gz = tmp_path / "cut-images-idx3-ubyte.gz"
    cut_gz.write_bytes(gzip.compress(raw)[:-20])  # a broken download: the gzip stream ends early
    with pytest.raises(DataError, match="cut-images-idx3-ubyte.gz"):
        read_idx(cut_gz)


def test_read_idx_bad_magic_and_extra_bytes(tmp_path):
    raw = idx_bytes(np.arange(4, dtype=np.uint8))
    bad = tmp_path / "bad-magic"
    bad.write_bytes(b"\x00\x00\x0d" + raw[3:])  # type code 0x0D (float) instead of 0x08
    with pytest.raises(DataError, match="bad-magic.*magic"):
        read_idx(bad)
    long = tmp_path / "long-labels"
    long.write_bytes(raw + b"\x00")
    with pytest.raises(DataError, match="long-labels.*trailing"):
        read_idx(long)
    with pytest.raises(DataError, match="missing-file"):
        read_idx(tmp_path / "missing-file")


def test_load_checks_counts(tmp_path):
    arrays = write_fmnist(tmp_path, 6, 4)
    data = load_fashion_mnist(tmp_path)
    for key in FILES:
        np.testing.assert_array_equal(data[key], arrays[key])
    write_idx(tmp_path / FILES["test_labels"], np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_fashion_mnist(tmp_path)


def corners(masks: np.ndarray) -> list[tuple[bool, bool]]:
    """(top, left) of each mask, asserting it is exactly one 4x4 corner block."""
    out = []
    for m in masks:
        rows, cols = np.nonzero(m)
        assert m.sum() == 16
        assert set(rows) in ({0, 1, 2, 3}, {24, 25, 26, 27}) and set(cols) in ({0, 1, 2, 3}, {24, 25, 26, 27})
        out.append((rows.min() == 0, cols.min() == 0))
    return out


def test_train_patch_is_a_corner_with_class_grey():
    n = 400
    images = tiny_images(n)
    labels = np.random.default_rng(3).integers(0, 10, n).astype(np.uint8)
    out, masks = add_decoy(images, labels, np.random.default_rng(0), train=True)
    assert out.dtype == np.uint8 and masks.dtype == bool and masks.shape == (n, 28, 28)
    np.testing.assert_array_equal(masks, out != images)  # mask == exactly the changed pixels
    np.testing.assert_array_equal(out[~masks], images[~masks])
    for i in range(n):
        assert set(np.unique(out[i][masks[i]])) == {255 - 25 * int(labels[i])}
    np.testing.assert_array_equal(patch_grey(np.arange(10)), [255, 230, 205, 180, 155, 130, 105, 80, 55, 30])
    # all four corners occur, each side chosen by a fair coin
    seen = corners(masks)
    assert len(set(seen)) == 4
    tops = np.mean([t for t, _ in seen])
    lefts = np.mean([lf for _, lf in seen])
    assert abs(tops - 0.5) < 0.1 and abs(lefts - 0.5) < 0.1
    assert images.sum() == tiny_images(n).sum()  # the input is not modified


def test_test_patch_grey_is_random_class():
    n = 5000
    images = np.zeros((n, 28, 28), np.uint8)
    labels = np.random.default_rng(4).integers(0, 10, n).astype(np.uint8)
    out, masks = add_decoy(images, labels, np.random.default_rng(0), train=False)
    corners(masks[:200])
    np.testing.assert_array_equal(masks, out != images)
    greys = np.array([np.unique(o[m])[0] for o, m in zip(out, masks)])
    assert set(greys) <= GREYS and len(set(greys)) == 10
    coded = (255 - greys.astype(int)) // 25
    # independent of the label: agreement near chance (0.1) and a contingency table without structure
    assert abs(np.mean(coded == labels) - 0.1) < 0.02
    table = np.zeros((10, 10))
    np.add.at(table, (labels, coded), 1)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / n
    chi2 = ((table - expected) ** 2 / expected).sum()
    assert chi2 < 150  # 81 degrees of freedom: p < 1e-5 above this


def test_decoy_deterministic_per_seed():
    images = tiny_images(50)
    labels = np.arange(50, dtype=np.uint8) % 10
    for train in (True, False):
        a = add_decoy(images, labels, np.random.default_rng(7), train=train)
        b = add_decoy(images, labels, np.random.default_rng(7), train=train)
        c = add_decoy(images, labels, np.random.default_rng(8), train=train)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        assert not np.array_equal(a[1], c[1])


def load_benchmark():
    spec = importlib.util.spec_from_file_location("decoy_anchor", REPO / "benchmarks" / "decoy_anchor.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_loss_terms():
    bench = load_benchmark()
    params = bench.init_params(0)
    assert [tuple(p.shape) for p in params] == [(784, 50), (50,), (50, 30), (30,), (30, 10), (10,)]
    rng = np.random.default_rng(0)
    x, mask = add_decoy(tiny_images(8), np.arange(8, dtype=np.uint8), rng, train=True)
    x = torch.from_numpy(x.reshape(8, -1).astype(np.float64))
    mask = torch.from_numpy(mask.reshape(8, -1))
    onehot = torch.eye(10, dtype=torch.float64)[:8]
    terms = bench.objective(params, x, onehot, mask, 1000.0)
    # summed (not averaged) cross-entropy; penalty = lambda * squared input gradient of sum log p in the mask
    logp = bench.log_probs(params, x)
    assert torch.allclose(terms["crossentropy"], -logp[torch.arange(8), torch.arange(8)].sum())
    xg = x.clone().requires_grad_()
    (g,) = torch.autograd.grad(bench.log_probs(params, xg).sum(), xg)
    assert torch.allclose(terms["rightreasons"], 1000.0 * (g[mask] ** 2).sum())
    assert torch.allclose(terms["smallparams"], 1e-4 * sum((p ** 2).sum() for p in params))
    assert float(bench.objective(params, x, onehot, None, 0.0)["rightreasons"]) == 0.0
    terms["loss"].backward()  # the penalty is differentiable in the weights (double backprop)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)


@pytest.fixture
def torch_globals():
    """main() sets torch's thread count and deterministic mode for the process: give them back."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def test_benchmark_runs_one_epoch(tmp_path, capsys, torch_globals):
    bench = load_benchmark()
    write_fmnist(tmp_path, 600, 100)
    out = tmp_path / "anchor.json"
    args = ["--data-root", str(tmp_path), "--epochs", "1", "--seeds", "0", "1", "--out", str(out)]
    result = bench.main(args)
    assert json.loads(out.read_text()) == json.loads(capsys.readouterr().out)
    for method in ("vanilla", "rrr"):
        s = result["summary"][method]
        assert len(s["test_accuracy"]) == 2 and all(0.0 <= a <= 1.0 for a in s["test_accuracy"])
    assert result["summary"]["vanilla"]["published"] == 0.4808 and result["summary"]["rrr"]["published"] == 0.8579
    again = bench.main(args)  # same seed, same numbers
    assert again["runs"] == [{**r, "seconds": a["seconds"]} for r, a in zip(result["runs"], again["runs"])]


@pytest.mark.slow
def test_real_fashion_mnist_loads():
    if not (DEFAULT_ROOT / FILES["train_images"]).exists():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    data = load_fashion_mnist()
    assert data["train_images"].shape == (60000, 28, 28) and data["train_labels"].shape == (60000,)
    assert data["test_images"].shape == (10000, 28, 28) and data["test_labels"].shape == (10000,)
    assert np.bincount(data["train_labels"]).tolist() == [6000] * 10


def test_generic_layout_through_extraction_and_saliency(tmp_path):
    """decoy@<name> writes the generic layout; extraction keeps the protocol's train/test (val
    carved from train), the masks are the object's own pixels (never the patch), the decoy agrees
    with the label on train only, and the same seed gives the same bytes."""
    from megl.config import DatasetConfig, LabelConfig, SaliencyConfig, SplitConfig
    from megl.data.decoy_fmnist import write_generic
    from megl.data.extract import extract_dataset
    from megl.data.saliency import build_saliency

    source = tmp_path / "src"
    source.mkdir()
    arrays = write_fmnist(source, 200, 60)
    arrays["train_images"][:, 10:18, 10:18] = 200  # an "object" in the middle
    arrays["train_images"][:, :, :] = np.where(arrays["train_images"] == 200, 200, 0)
    for key, name in FILES.items():
        write_idx(source / name, arrays[key])
    summary = write_generic(source, tmp_path / "raw", seed=0, visual_fraction=0.5, train_samples=100)
    assert summary["samples"] == {"train": 100, "test": 60} and summary["decoy_agreement"]["train"] == 1.0
    again = write_generic(source, tmp_path / "raw2", seed=0, visual_fraction=0.5, train_samples=100)
    assert again == summary
    assert (tmp_path / "raw/manifest.jsonl").read_bytes() == (tmp_path / "raw2/manifest.jsonl").read_bytes()

    records = [json.loads(line) for line in (tmp_path / "raw/manifest.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert sorted({r["label"] for r in train}) == sorted({r["label"] for r in records})  # every class kept
    with_map = [r for r in train if "visual" in r]
    assert 20 <= len(with_map) <= 80 and all("visual" in r for r in records if r["split"] == "test")
    truth = json.loads((tmp_path / "raw/decoy_truth.json").read_text())
    from PIL import Image

    for r in with_map[:10]:
        mask = np.asarray(Image.open(tmp_path / "raw" / r["visual"]))
        x0, y0, x1, y1 = truth[r["id"]]["decoy_box"]
        assert mask[10:18, 10:18].all() and not mask[y0 : y1 + 1, x0 : x1 + 1].any()

    cfg = DatasetConfig(layout="generic", raw_dir=str(tmp_path / "raw"), image_size=32, on_bad_sample="error",
                        labels=LabelConfig(min_samples_per_class=1, max_classes=10), split_from="source", decode_workers=1)
    report = extract_dataset("decoy", cfg, SplitConfig(seed=0, val=0.1, test=0.2), tmp_path / "data", tmp_path / "dataset.json")
    assert report["samples"]["rejected"] == 0
    assert report["splits"]["test"] == 60 and report["splits"]["train"] + report["splits"]["val"] == 100
    sal = build_saliency("decoy", cfg, SaliencyConfig(grid_sizes=(8,), eps=1e-8), tmp_path / "data", tmp_path / "sal", tmp_path / "sal.json")
    assert sal["maps_aggregated"] == len(with_map) + 60  # the test split's maps score the CAMs


def test_method_seeds_box_masses_in_the_drawn_images_pixels():
    """benchmarks/method_seeds.py scores the CAM's share in the decoy's box (decoy_truth.json, in
    28 px) as in the target's (synthetic_truth.json, in the drawn size)."""
    spec = importlib.util.spec_from_file_location("method_seeds", REPO / "benchmarks" / "method_seeds.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cams = np.zeros((2, 8, 8), dtype=np.float32)
    cams[0, 0, 0] = 1.0  # all on the top-left cell: the patch's corner
    cams[1, 7, 7] = 1.0  # all on the opposite corner
    decoys = {"a": {"decoy_class": 1, "decoy_box": [0, 0, 3, 3]}, "b": {"decoy_class": 2, "decoy_box": [0, 0, 3, 3]}}
    masses = bench.box_masses(cams, ["a", "b"], decoys, 64, 28)
    assert set(masses) == {"decoy_mass"}
    assert 0.3 < masses["decoy_mass"] < 0.5  # sample a: most of its mass (bilinear spill aside); b: none
    targets = {"a": {"target_box": [0, 0, 31, 31]}, "b": {"target_box": [32, 32, 63, 63]}}
    assert bench.box_masses(cams, ["a", "b"], targets, 64, 64)["target_mass"] > 0.95
