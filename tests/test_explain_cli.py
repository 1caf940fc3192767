"""`megl explain` (the installed console command) on exported tiny models, on images of every size
and mode a user may have, on real photos, and on files that are not images."""

import json
import subprocess
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import sklearn
from PIL import Image

from megl.data.images import to_rgb
from megl.layout import RunKey, run_layout
from megl.train import train

PHOTOS = [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
          Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"]


@pytest.fixture(scope="module")
def exported(small_params, tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    out = {}
    for variant in ("megl", "llava"):
        paths = run_layout(root, RunKey("object_me", "resnet18", variant, 0))
        train(small_params, "object_me", "resnet18", variant, paths, max_steps=3)
        out[variant] = paths.model_dir
    return out


def _images(folder: Path) -> dict[str, tuple[int, int]]:
    """One image per mode a user may have, at odd sizes: name -> (width, height)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (91, 37, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgb).save(folder / "photo.jpeg", quality=90)
    Image.fromarray(rgb[..., 0]).save(folder / "grey.png")
    rgba = np.dstack([rgb, np.where(np.arange(37) < 18, 0, 255).astype(np.uint8)[None, :].repeat(91, 0)])
    Image.fromarray(rgba, "RGBA").save(folder / "transparent.png")
    Image.fromarray((np.linspace(0, 65535, 50 * 20).reshape(20, 50)).astype(np.uint16)).save(folder / "sixteen_bit.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.gif")
    return {"rgb.png": (37, 91), "photo.jpeg": (37, 91), "grey.png": (37, 91), "transparent.png": (37, 91),
            "sixteen_bit.png": (50, 20), "palette.gif": (37, 91)}


def _megl(venv_bin, *args):
    return subprocess.run([str(venv_bin / "megl"), "explain", *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_every_mode_and_size_and_real_photos(exported, venv_bin, tmp_path):
    sizes = _images(tmp_path / "mine")
    out = tmp_path / "explained"
    run = _megl(venv_bin, exported["megl"], tmp_path / "mine", *PHOTOS, "--out", out, "--device", "cpu")
    assert run.returncode == 0, run.stderr
    classes = json.loads((exported["megl"] / "config.json").read_text())["classes"]
    for photo in PHOTOS:
        with Image.open(photo) as img:
            sizes[photo.name] = img.size
    assert run.stdout.count("overlay: ") == len(sizes)
    for name, size in sizes.items():
        record = json.loads((out / f"{name}.json").read_text())
        assert record["predicted"] in classes and 0 < record["probability"] <= 1
        assert [t["probability"] for t in record["top"]] == sorted((t["probability"] for t in record["top"]), reverse=True)
        assert record["top"][0]["class"] == record["predicted"] and record["explainer"] == "gradcam"
        assert isinstance(record["explanation"], str)  # a 3-step head may write nothing yet
        cam = np.array(record["cam"])
        assert cam.shape == (8, 8) and cam.min() >= 0 and cam.max() <= 1
        with Image.open(out / record["overlay"]) as overlay:
            assert overlay.size == size and overlay.mode == "RGB"  # over the image as the user has it
        assert f'{record["predicted"]} (p = {record["probability"]:.3f}) "{record["explanation"]}"' in run.stdout
    first = (out / "rgb.png.json").read_bytes()
    assert _megl(venv_bin, exported["megl"], tmp_path / "mine" / "rgb.png", "--out", out).returncode == 0
    assert (out / "rgb.png.json").read_bytes() == first  # same model and image, same bytes


@pytest.mark.slow
def test_an_unreadable_file_is_named_and_the_others_are_explained(exported, venv_bin, tmp_path):
    _images(tmp_path / "mine")
    (tmp_path / "mine" / "notes.png").write_text("not an image")
    with open(tmp_path / "mine" / "cut.jpeg", "wb") as f:
        f.write((tmp_path / "mine" / "photo.jpeg").read_bytes()[:300])  # truncated
    run = _megl(venv_bin, exported["megl"], tmp_path / "mine", "--out", tmp_path / "out")
    assert run.returncode == 1
    assert "notes.png: cannot be read as an image" in run.stderr and "cut.jpeg: cannot be read as an image" in run.stderr
    assert "2 of 8 images could not be read" in run.stderr
    assert not (tmp_path / "out" / "notes.png.json").exists() and (tmp_path / "out" / "rgb.png.json").is_file()


@pytest.mark.slow
def test_clear_errors_before_any_image(exported, venv_bin, tmp_path):
    missing = _megl(venv_bin, exported["megl"], tmp_path / "nope.png")
    assert missing.returncode == 2 and "nope.png: no such file or folder" in missing.stderr
    not_a_model = _megl(venv_bin, tmp_path, PHOTOS[0])
    assert not_a_model.returncode == 2 and "config.json: no exported model here" in not_a_model.stderr
    mllm = _megl(venv_bin, exported["llava"], PHOTOS[0])
    assert mllm.returncode == 2 and "llava has no saliency map (an MLLM baseline)" in mllm.stderr
    (tmp_path / "empty").mkdir()
    empty = _megl(venv_bin, exported["megl"], tmp_path / "empty")
    assert empty.returncode == 2 and "no images in this folder" in empty.stderr


def test_to_rgb_for_every_mode():
    sixteen = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert np.asarray(to_rgb(sixteen))[0, :, 0].tolist() == [0, 128, 255]  # scaled, not clipped at 255
    clear = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    assert np.asarray(to_rgb(clear)).tolist() == [[[255, 255, 255]] * 2]  # transparent shows white
    grey = Image.new("L", (1, 1), 7)
    assert np.asarray(to_rgb(grey)).tolist() == [[[7, 7, 7]]]


def test_the_console_command_lists_its_commands(venv_bin):
    run = subprocess.run([str(venv_bin / "megl"), "--help"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "explain" in run.stdout
    bad = subprocess.run([str(venv_bin / "megl"), "explian"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown command 'explian'" in bad.stderr
