"""The stage CLIs as DVC calls them: overrides, outputs under the params file's folder, clear failures."""

import json
import subprocess
import sys

import yaml

from layouts import make_actx_nlx


def params_with_fixture(repo, tmp_path, policy="skip"):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["datasets"]["fixture"] = {
        "layout": "actx_nlx", "raw_dir": "raw", "image_size": 16, "on_bad_sample": policy,
        "labels": {"min_samples_per_class": 1, "max_classes": 10},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def stage(repo, name, *args, cwd):
    return subprocess.run([sys.executable, str(repo / "stages" / f"{name}.py"), *args], cwd=cwd, capture_output=True, text=True)


def test_extract_writes_under_the_params_folder(repo, tmp_path):
    make_actx_nlx(tmp_path / "raw")
    params = params_with_fixture(repo, tmp_path)
    out = stage(repo, "extract", "--dataset", "fixture", "--params", str(params), cwd=repo)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["table1"] == {"samples": 3, "textual": 3, "visual": 0, "classes": 3}
    assert (tmp_path / "data/fixture/manifest.parquet").is_file()
    assert (tmp_path / "metrics/fixture/dataset.json").is_file()


def test_extract_overrides(repo, tmp_path):
    make_actx_nlx(tmp_path / "elsewhere")
    params = params_with_fixture(repo, tmp_path)
    args = ["--raw-dir", str(tmp_path / "elsewhere"), "--out", str(tmp_path / "o"), "--report", str(tmp_path / "r.json")]
    out = stage(repo, "extract", "--dataset", "fixture", "--params", str(params), *args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "o/images.npy").is_file() and (tmp_path / "r.json").is_file()


def test_bad_input_exits_nonzero_naming_the_file(repo, tmp_path):
    raw = make_actx_nlx(tmp_path / "raw")
    (raw / "images/002.jpg").write_bytes(b"garbage")
    params = params_with_fixture(repo, tmp_path, policy="error")
    out = stage(repo, "extract", "--dataset", "fixture", "--params", str(params), cwd=tmp_path)
    assert out.returncode != 0
    assert "corrupt_image" in out.stderr and "002.jpg" in out.stderr and "actX_val.json" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists()


def test_unknown_dataset_and_bad_params(repo, tmp_path):
    params = params_with_fixture(repo, tmp_path)
    out = stage(repo, "extract", "--dataset", "nope", "--params", str(params), cwd=tmp_path)
    assert out.returncode != 0 and "unknown dataset 'nope'" in out.stderr
    bad = yaml.safe_load(params.read_text())
    bad["saliency"]["grid"] = 7
    params.write_text(yaml.safe_dump(bad))
    out = stage(repo, "saliency", "--dataset", "fixture", "--params", str(params), cwd=tmp_path)
    assert out.returncode != 0 and "saliency: unknown key(s) ['grid']" in out.stderr
