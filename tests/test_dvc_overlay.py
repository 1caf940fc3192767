"""megl.dvc_overlay against real DVC: the blocks of an overlay file reach the experiment's
params.yaml (new keys appended, existing ones replaced) and its stages run with them."""

import subprocess
import sys
import textwrap

import yaml

from megl.dvc_overlay import hydra_value


def test_hydra_values_survive_dvc_quoting():
    assert hydra_value({"a": None, "b": [1, "x y"], "c": True, "d": "/p/q"}) == '{a: null, b: [1, "x y"], c: true, d: "/p/q"}'


def test_overlay_runs_an_experiment_with_the_blocks(tmp_path, venv_bin):
    run = lambda *cmd: subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, text=True)  # noqa: E731
    run("git", "init", "-q")
    run("git", "config", "user.email", "t@example.com")
    run("git", "config", "user.name", "t")
    run(str(venv_bin / "dvc"), "init", "-q")
    (tmp_path / "params.yaml").write_text("decoys: {}\ndatasets:\n  a: {raw_dir: raw/a}\ngrid:\n  datasets: [a]\n")
    (tmp_path / "dvc.yaml").write_text(textwrap.dedent("""\
        vars:
          - params.yaml
        stages:
          decoy:
            foreach: ${decoys}
            do:
              cmd: echo ${item.out_dir} > made_${key}.txt
              outs:
                - made_${key}.txt
        """))
    (tmp_path / "overlay.yaml").write_text(textwrap.dedent("""\
        decoys:
          d1: {out_dir: "raw/with space", seed: 0, train_samples: null}
        datasets:
          d1: {raw_dir: raw/d1, labels: {max_classes: 10}}
        grid:
          datasets: [d1]
        """))
    run("git", "add", "-A")
    run("git", "commit", "-qm", "init")
    out = subprocess.run([sys.executable, "-m", "megl.dvc_overlay", "overlay.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    assert params["decoys"] == {"d1": {"out_dir": "raw/with space", "seed": 0, "train_samples": None}}
    assert params["datasets"] == {"a": {"raw_dir": "raw/a"}, "d1": {"raw_dir": "raw/d1", "labels": {"max_classes": 10}}}
    assert params["grid"]["datasets"] == ["d1"]
    assert (tmp_path / "made_d1.txt").read_text().strip() == "raw/with space"
