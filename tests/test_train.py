"""The training loop on a small synthetic dataset made by the real stages."""

import dataclasses
import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from megl import tracking
from megl.layout import RunKey, run_layout
from megl.train import train

VARIANTS = ["megl", "visual_text", "text", "visual", "baseline"]
BASELINES = ["gradia", "haics", "res_g", "res_l", "cdep", "rrr"]
MLLMS = ["llava", "finetune_cot"]


def paths(root, backbone, variant, tag=""):
    """The layout's paths under a root of their own per tag (runs that must not share folders)."""
    return run_layout(root / "runs" / (tag or "default"), RunKey("object_me", backbone, variant, 0))


@pytest.mark.parametrize("backbone", ["resnet18", "vit_b16"])
@pytest.mark.parametrize("variant", VARIANTS + BASELINES + MLLMS)
def test_every_variant_trains_a_step(small_params, backbone, variant):
    if variant == "cdep" and backbone == "vit_b16":
        # no faithful contextual decomposition for ViT: the run says n/a instead of inventing one
        p = paths(small_params.root, backbone, variant)
        summary = train(small_params, "object_me", backbone, variant, p, max_steps=1)
        assert "ResNet" in summary["not_applicable"] and summary["history"] == []
        assert "not_applicable" in json.loads((p.model_dir / "config.json").read_text())
        return
    if variant in MLLMS and backbone != small_params.grid.backbones[0]:
        # backbone-independent: trained once per dataset, under the grid's first backbone
        summary = train(small_params, "object_me", backbone, variant, paths(small_params.root, backbone, variant), max_steps=1)
        assert "trained once" in summary["not_applicable"]
        return
    logged = []
    p = paths(small_params.root, backbone, variant)
    summary = train(small_params, "object_me", backbone, variant, p, max_steps=1, log_step=lambda s, v: logged.append(v))
    assert summary["steps"] == 1 and len(logged) == 1
    terms = set(logged[0])
    expected = {"pred", "loss"} | ({"visual"} if variant in ("megl", "visual_text", "visual") else set())
    expected |= {"textual"} if variant in ("megl", "visual_text", "text") else set()
    expected |= {variant} if variant in BASELINES else set()
    if variant in MLLMS:
        expected = {"answer", "loss"}
    assert terms == expected
    assert all(torch.isfinite(torch.tensor(v)) for v in logged[0].values())
    weights = load_file(p.model_dir / "model.safetensors")
    config = json.loads((p.model_dir / "config.json").read_text())
    assert config["variant"] == variant and config["grid"] == 8
    card = (p.model_dir / "README.md").read_text()  # the model card, as Hugging Face folders have
    assert card.startswith("---\nlibrary_name: megl\n") and f"`object_me/{backbone}/{variant}/s0`" in card
    assert "load_exported(" in card and "not a model for real images" in card and str(small_params.root) not in card
    if variant in MLLMS:
        assert any("lora_" in k for k in weights) and (p.model_dir / "tokenizer").is_dir()
        return
    assert any(k.startswith("classifier.") for k in weights)
    assert any(k.startswith("text_head.") for k in weights) == ("textual" in terms)
    # RES-L's learned mask transform is part of the exported model
    assert any(k.startswith("loss_state.") for k in weights) == (variant == "res_l")
    assert (p.model_dir / "tokenizer").is_dir() == ("textual" in terms)


@pytest.mark.parametrize("variant", ["visual", "megl", "res_l"])
def test_same_params_same_weights_and_resume_is_bit_exact(small_params, variant):
    root = small_params.root
    full = paths(root, "resnet18", variant, "_full")
    train(small_params, "object_me", "resnet18", variant, full)

    again = paths(root, "resnet18", variant, "_again")
    train(small_params, "object_me", "resnet18", variant, again)

    # "kill" after the first epoch: stop early, then resume to the end
    cut = paths(root, "resnet18", variant, "_cut")
    one_epoch = dataclasses.replace(small_params, train=dataclasses.replace(small_params.train, epochs=1))
    train(one_epoch, "object_me", "resnet18", variant, cut)
    summary = train(small_params, "object_me", "resnet18", variant, cut, resume=True)
    assert summary["epochs"] == 2

    reference = load_file(full.checkpoint_dir / "latest" / "model.safetensors")
    for other in (again, cut):
        state = load_file(other.checkpoint_dir / "latest" / "model.safetensors")
        assert state.keys() == reference.keys()
        differ = [k for k in state if not torch.equal(state[k], reference[k])]
        assert not differ, f"{other.model_dir.relative_to(root)}: {len(differ)} tensors differ, e.g. {differ[:3]}"
    full_summary, cut_summary = (json.loads(p.train_metrics.read_text()) for p in (full, cut))
    assert full_summary["history"] == cut_summary["history"]
    # the resumed run counts the samples of the epochs before the resume too
    assert cut_summary["samples_per_rank"] == full_summary["samples_per_rank"] != [0]


def test_checkpoint_last_exports_the_last_epoch_and_visual_l1_sum_scales_the_term(small_params):
    """train.checkpoint: last exports the schedule's last epoch whatever val accuracy did (best_val:
    the best val epoch); train.visual_l1: sum is the mean times the grid's 64 cells (paper Eq. 1)."""
    logged = {}
    for checkpoint, l1 in (("last", "sum"), ("best_val", "mean")):
        cfg = dataclasses.replace(small_params.train, epochs=3, checkpoint=checkpoint, visual_l1=l1)
        p = paths(small_params.root, "resnet18", "visual", f"_ckpt_{checkpoint}")
        logged[l1] = []
        summary = train(dataclasses.replace(small_params, train=cfg), "object_me", "resnet18", "visual", p,
                        log_step=lambda s, v, out=logged[l1]: out.append(v))
        config = json.loads((p.model_dir / "config.json").read_text())
        expected = 2 if checkpoint == "last" else summary["best_epoch"]
        assert summary["checkpoint"] == checkpoint and summary["exported_epoch"] == config["best_epoch"] == expected
    # same seed, same first batch: the first step's L1 differs by the cell count only
    assert logged["sum"][0]["visual"] == pytest.approx(64 * logged["mean"][0]["visual"], rel=1e-4)


def test_a_run_that_dies_keeps_the_previous_outputs(small_params, monkeypatch, tmp_path):
    """Outputs are published when the run has finished: a crash or Ctrl-C in epoch 2 leaves the
    previous run's model folder, training summary and history as they were, and the MLflow run ends
    FAILED (crash) or KILLED (Ctrl-C)."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MEGL_MLFLOW_PARENT_RUN_ID", raising=False)
    params = dataclasses.replace(small_params, tracking=dataclasses.replace(small_params.tracking, enabled=True))
    p = paths(small_params.root, "resnet18", "baseline", "_dies")
    train(params, "object_me", "resnet18", "baseline", p)
    outputs = [p.model_dir / "model.safetensors", p.model_dir / "config.json", p.train_metrics, p.history]
    before = {f: f.read_bytes() for f in outputs}
    steps_per_epoch = json.loads(p.train_metrics.read_text())["steps"] // small_params.train.epochs

    client = MlflowClient(uri)
    for error, status in ((RuntimeError, "FAILED"), (KeyboardInterrupt, "KILLED")):
        def die(step, values, error=error):
            if step == steps_per_epoch + 2:  # in epoch 2, after epoch 1 exported its best model
                raise error("stopped")
        with pytest.raises(error):
            train(params, "object_me", "resnet18", "baseline", p, log_step=die)
        assert {f: f.read_bytes() for f in outputs} == before
        (latest,) = client.search_runs([client.get_experiment_by_name("megl").experiment_id], max_results=1,
                                       order_by=["start_time DESC"])
        assert latest.info.status == status


def test_nan_loss_stops_naming_step_and_term(small_params):
    bad = dataclasses.replace(small_params, train=dataclasses.replace(small_params.train, lambda_visual=float("inf")))
    with pytest.raises(FloatingPointError, match=r"loss term .visual. is (nan|inf) at epoch 0, step 0 "):
        train(bad, "object_me", "resnet18", "visual", paths(small_params.root, "resnet18", "nan"))


@pytest.mark.slow
def test_two_process_deepspeed_zero2_on_cpu_shards_the_data(small_params, repo, venv_bin):
    """Real `accelerate launch` with 2 processes and DeepSpeed ZeRO-2 on the CPU (gloo)."""
    import os
    import subprocess

    root = small_params.root
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"}
    cmd = [
        str(venv_bin / "accelerate"), "launch", "--config_file", "configs/accelerate/deepspeed_zero2_cpu.yaml",
        "stages/train.py", "--dataset", "object_me", "--backbone", "resnet18", "--variant", "megl",
        "--params", str(root / "params.yaml"),
    ]
    out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    layout = run_layout(root, RunKey("object_me", "resnet18", "megl", small_params.train.seed))
    summary = json.loads(layout.train_metrics.read_text())
    n_train = int((pd.read_parquet(root / "data/object_me/manifest.parquet")["split"] == "train").sum())
    per_rank = summary["samples_per_rank"]
    epochs = summary["epochs"]
    assert summary["world_size"] == 2 and len(per_rank) == 2
    # each rank saw its own half: without the gloo group each would see (almost) all n_train
    assert per_rank[0] == per_rank[1]
    assert n_train // 2 - small_params.train.batch_size < per_rank[0] / epochs <= n_train // 2
    assert (layout.model_dir / "model.safetensors").is_file()


def test_seed_option_trains_that_seed(small_params, repo):
    """`stages/train.py --seed 1`: seed 1 everywhere downstream, in its own run folder, other weights."""
    import subprocess
    import sys

    root = small_params.root
    layouts = {}
    for seed in (0, 1):
        cmd = [sys.executable, "stages/train.py", "--dataset", "object_me", "--backbone", "resnet18", "--variant", "baseline",
               "--seed", str(seed), "--max-steps", "2", "--params", str(root / "params.yaml")]
        out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        layouts[seed] = run_layout(root, RunKey("object_me", "resnet18", "baseline", seed))
    s0, s1 = layouts[0], layouts[1]
    assert s1.model_dir == root / "models/object_me/resnet18/baseline/s1"
    assert json.loads((s1.model_dir / "config.json").read_text())["train"]["seed"] == 1
    assert json.loads((s0.model_dir / "config.json").read_text())["train"]["seed"] == 0
    assert json.loads(s1.train_metrics.read_text())["seed"] == 1 and s1.history.is_file()
    w0, w1 = load_file(s0.model_dir / "model.safetensors"), load_file(s1.model_dir / "model.safetensors")
    assert w0.keys() == w1.keys() and any(not torch.equal(w0[k], w1[k]) for k in w0)

    bad = subprocess.run([sys.executable, "stages/train.py", "--dataset", "object_me", "--backbone", "resnet18",
                          "--variant", "baseline", "--seed", "-1", "--params", str(root / "params.yaml")],
                         cwd=repo, capture_output=True, text=True)
    assert bad.returncode == 1 and "seed must be a non-negative integer" in bad.stderr and "Traceback" not in bad.stderr


def test_run_is_tracked_in_mlflow(small_params, monkeypatch, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = dataclasses.replace(small_params, tracking=dataclasses.replace(small_params.tracking, enabled=True))
    train(params, "object_me", "resnet18", "megl", paths(small_params.root, "resnet18", "megl", "_tracked"), max_steps=3)

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("megl")  # one experiment for the project
    (run,) = client.search_runs([experiment.experiment_id])
    seed = small_params.train.seed
    assert run.info.status == "FINISHED" and run.info.run_name == f"object_me/resnet18/megl/s{seed}"
    assert run.data.params["train.cam_mode"] == "create_graph" and run.data.params["variant.consistency"] == "True"
    assert run.data.tags["variant"] == "megl" and run.data.tags["seed"] == str(seed)
    assert "mlflow.parentRunId" not in run.data.tags  # not started by a sweep: a top-level run
    steps = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in steps] == [1, 2, 3]
    assert {"train/pred", "train/visual", "train/textual", "val_accuracy"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"cam_gallery.png", "explanations.json"} <= artifacts
    # the model: an MLflow model of the run, registered (tests/test_mlflow_model.py)
    (output,) = client.get_run(run.info.run_id).outputs.model_outputs
    assert client.get_logged_model(output.model_id).source_run_id == run.info.run_id
    table = json.loads(open(client.download_artifacts(run.info.run_id, "explanations.json", str(tmp_path))).read())
    assert set(table["columns"]) >= {"sample", "label", "predicted", "references", "generated"}
    assert len(table["data"]) == small_params.tracking.gallery_samples
    # the run carries the exported model's digest (evaluation finds it by that); the folder holds no run id
    model_dir = paths(small_params.root, "resnet18", "megl", "_tracked").model_dir
    assert run.data.tags["megl.model_sha256"] == tracking.model_digest(model_dir)
    assert sorted(p.name for p in model_dir.iterdir()) == ["README.md", "config.json", "model.safetensors", "tokenizer"]


@pytest.mark.slow
def test_sigterm_ends_the_run_killed_and_keeps_outputs(small_params, repo, tmp_path):
    """`kill <pid>` on a training stage (a cancelled Prefect task does the same): the MLflow run ends
    KILLED, not RUNNING forever, and no output of the run is written."""
    import os
    import signal
    import subprocess
    import sys

    import yaml
    from mlflow.tracking import MlflowClient

    raw = yaml.safe_load((small_params.root / "params.yaml").read_text())
    raw["train"]["epochs"] = 1000  # never finishes before the kill, however fast the machine
    raw["tracking"]["enabled"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "data").symlink_to(small_params.root / "data")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    env.pop("MEGL_MLFLOW_PARENT_RUN_ID", None)
    cmd = [sys.executable, "stages/train.py", "--dataset", "object_me", "--backbone", "resnet18", "--variant", "baseline",
           "--params", str(tmp_path / "params.yaml")]
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if '"epoch": 1' in line:  # epoch 1 evaluated, so epoch 0's checkpoint is on disk
            break
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("megl").experiment_id])
    assert run.info.status == "KILLED"
    lay = run_layout(tmp_path, RunKey("object_me", "resnet18", "baseline", 0))
    assert not lay.model_dir.exists() and not lay.train_metrics.exists()  # nothing published
    assert (lay.checkpoint_dir / "latest" / "progress.json").is_file()  # --resume can continue
