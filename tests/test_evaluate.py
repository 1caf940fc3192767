"""The evaluate stage on trained tiny models: every metric present, deterministic, outputs written."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from megl.config import VariantConfig
from megl.models.load import load_exported
from megl.evaluate.run import evaluate
from megl.layout import RunKey, run_layout
from megl.train import train

ROOT = "evaluated"  # a root of its own under the session's pipeline folder


def run_paths(root, backbone, variant):
    return run_layout(root / ROOT, RunKey("object_me", backbone, variant, 0))


@pytest.fixture(scope="module")
def trained(small_params):
    root = small_params.root
    for variant in ("megl", "baseline"):
        train(small_params, "object_me", "resnet18", variant, run_layout(root / ROOT, RunKey("object_me", "resnet18", variant, 0)))
    return small_params


@pytest.mark.slow
def test_megl_model_gets_every_metric_deterministically(trained):
    paths = run_paths(trained.root, "resnet18", "megl")
    metrics = evaluate(trained, "object_me", "resnet18", "megl", paths)
    first = paths.test_metrics.read_bytes()
    for key in ("accuracy", "precision", "recall", "f1", "miou", "pointing_game", "relevance_mass",
                "deletion_auc", "insertion_auc", "average_drop", "increase_in_confidence",
                "bleu_1", "bleu_4", "meteor", "rouge_l", "cider", "chance_accuracy"):
        assert isinstance(metrics[key], float), key
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["miou"] <= 1 and metrics["seed"] == 0
    assert metrics["test_samples"] == len(pd.read_parquet(trained.root / "data/object_me/manifest.parquet").query("split == 'test'"))
    assert metrics["localisation_samples"] > 0 and metrics["faithfulness_samples"] > 0
    assert metrics["spice_status"] == "ok" or metrics["spice_status"].startswith("unavailable")
    # no CLIP weights here: no number from a random CLIP, and the metrics say why
    assert metrics["clipscore"] is None and metrics["clipscore_status"].startswith("unavailable: no local CLIP weights")
    assert metrics["backbone_profile"] == "tiny" and metrics["backbone_pretrained"] is False
    assert metrics["text_head_profile"] == "tiny" and metrics["num_classes"] == 4
    assert metrics["explainer"] == "gradcam"
    # grounding (megl.evaluate.grounding): on the synthetic benchmark, against its truth too
    assert {"grounding_named", "grounding_cam", "grounding_cam_chance", "grounding_target", "grounding_attributes"} <= set(metrics)

    evaluate(trained, "object_me", "resnet18", "megl", paths)
    assert paths.test_metrics.read_bytes() == first  # same model, same bytes
    text = first.decode()  # committed metrics must not depend on where the clone or its venv lives
    assert str(trained.root) not in text and ".venv" not in text and "site-packages" not in text

    efficiency = json.loads(paths.efficiency.read_text())
    assert efficiency["parameters_classifier"] > 0 and efficiency["fps"] > 0 and efficiency["batch_size"] == 1
    preds = pd.read_parquet(paths.results_dir / "predictions.parquet")
    assert len(preds) == metrics["test_samples"] and preds["generated"].map(len).gt(0).all()
    assert np.load(paths.results_dir / "cams.npy").shape == (len(preds), 8, 8)
    assert (paths.results_dir / "gallery.png").is_file() and "<table" in (paths.results_dir / "gallery.html").read_text()
    assert "columns: the image, the CAM of the predicted class, the ground-truth map" in (paths.results_dir / "gallery.html").read_text()
    f1_rows = json.loads(paths.per_class_f1.read_text())
    assert [r["class"] for r in f1_rows] == json.loads((trained.root / "data/object_me/classes.json").read_text())
    assert len(json.loads(paths.confusion.read_text())) == metrics["test_samples"]


def test_clipscore_with_a_local_clip_folder(trained, tmp_path):
    """The real CLIPScore path: CLIPModel and CLIPTokenizerFast from a local folder (here a tiny
    random CLIP saved by the test; a user points evaluate.clipscore_clip_path at CLIP ViT-B/32)."""
    import dataclasses

    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from megl.data.dataset import ExplanationDataset
    from megl.evaluate.run import clipscore

    words = ["a", "photo", "depicts", "red", "circle", "in", "the", "centre"]
    (tmp_path / "vocab.json").write_text(json.dumps(
        {"<|startoftext|>": 0, "<|endoftext|>": 1} | {f"{w}</w>": i + 2 for i, w in enumerate(words)}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    folder = tmp_path / "clip-tiny"
    CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(
        text_config={"vocab_size": 10, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 32},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )).save_pretrained(folder)
    cfg = dataclasses.replace(trained.evaluate, clipscore_clip_path=str(folder))
    test_set = ExplanationDataset(trained.root / "data/object_me", "test", 8)
    texts = ["a red circle in the centre"] * len(test_set)
    scores = clipscore(test_set, texts, cfg, torch.device("cpu"))
    assert isinstance(scores["clipscore"], float) and 0 <= scores["clipscore"] <= 2.5
    assert scores["clipscore_status"] == "ok: clip-tiny"
    assert clipscore(test_set, texts, cfg, torch.device("cpu")) == scores  # deterministic


def test_model_without_text_head_has_no_text_metrics(trained):
    metrics = evaluate(trained, "object_me", "resnet18", "baseline", run_paths(trained.root, "resnet18", "baseline"))
    assert "bleu_4" not in metrics and "clipscore" not in metrics
    assert {"accuracy", "miou", "deletion_auc"} <= set(metrics)


def test_stage_refuses_a_model_trained_with_another_seed(trained, repo):
    import shutil
    import subprocess
    import sys

    from megl.layout import run_layout

    s1 = run_layout(trained.root, RunKey("object_me", "resnet18", "megl", 1))
    shutil.copytree(run_paths(trained.root, "resnet18", "megl").model_dir, s1.model_dir)  # a seed-0 model in s1/
    cmd = [sys.executable, "stages/evaluate.py", "--dataset", "object_me", "--backbone", "resnet18", "--variant", "megl",
           "--seed", "1", "--params", str(trained.root / "params.yaml")]
    out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "models/object_me/resnet18/megl/s1/config.json was trained with seed 0, not 1" in out.stderr
    assert not s1.test_metrics.exists()


def test_evaluation_lands_in_the_run_that_trained_the_model(small_params, monkeypatch, tmp_path):
    """Two training runs share a name (same dataset/backbone/variant/seed, other params): evaluating
    the older model adds its metrics to the older run, tagged with that model's digest; the newer
    run is untouched (it used to get them as "the newest run with these tags")."""
    import dataclasses

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MEGL_MLFLOW_PARENT_RUN_ID", raising=False)
    key = RunKey("object_me", "resnet18", "baseline", 0)
    tracked = dataclasses.replace(small_params, tracking=dataclasses.replace(small_params.tracking, enabled=True))
    older = dataclasses.replace(tracked, train=dataclasses.replace(tracked.train, lr=3e-4))
    train(older, "object_me", "resnet18", "baseline", run_layout(tmp_path / "older", key), max_steps=2)
    train(tracked, "object_me", "resnet18", "baseline", run_layout(tmp_path / "newer", key), max_steps=2)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("megl").experiment_id], order_by=["start_time ASC"])
    assert [r.info.run_name for r in runs] == ["object_me/resnet18/baseline/s0"] * 2
    first, second = (r.info.run_id for r in runs)

    paths = run_layout(tmp_path / "older", key)
    metrics = evaluate(older, "object_me", "resnet18", "baseline", paths)
    assert client.get_run(first).data.metrics["test/accuracy"] == metrics["accuracy"]
    assert "test/accuracy" not in client.get_run(second).data.metrics
    assert {a.path for a in client.list_artifacts(first, "evaluation")} >= {"evaluation/gallery.png"}
    # the splits the run read, training's and evaluation's (tests/test_mlflow_model.py: digests, contexts)
    inputs = client.get_run(first).inputs.dataset_inputs
    assert sorted(i.dataset.name for i in inputs) == ["object_me/test", "object_me/train", "object_me/val"]


@pytest.mark.parametrize("variant", ["llava", "finetune_cot"])
def test_mllm_baseline_is_scored_by_its_parsed_answers(trained, variant):
    root = trained.root
    train(trained, "object_me", "resnet18", variant, run_layout(root / ROOT, RunKey("object_me", "resnet18", variant, 0)),
          max_steps=3)
    paths = run_paths(root, "resnet18", variant)
    metrics = evaluate(trained, "object_me", "resnet18", variant, paths)
    assert metrics["model_family"] == "llava" and metrics["mllm_profile"] == "tiny"
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["answers_without_class"] <= metrics["test_samples"]
    # no Grad-CAM: no localisation or faithfulness number is made up
    assert "miou" not in metrics and "deletion_auc" not in metrics
    assert ("meteor" in metrics) == (variant == "finetune_cot")
    assert ("grounding_target" in metrics) == (variant == "finetune_cot") and "grounding_cam" not in metrics
    preds = pd.read_parquet(paths.results_dir / "predictions.parquet")
    assert len(preds) == metrics["test_samples"]
    confusion = json.loads(paths.confusion.read_text())
    wrong = sum(r["predicted"] == "(no class)" for r in confusion)
    assert wrong == metrics["answers_without_class"]
    efficiency = json.loads(paths.efficiency.read_text())
    assert efficiency["parameters_total"] > 0 and efficiency["latency_ms"] > 0 and efficiency["batch_size"] == 1
    first = paths.test_metrics.read_bytes()
    evaluate(trained, "object_me", "resnet18", variant, paths)
    assert paths.test_metrics.read_bytes() == first


def test_multilayer_explainer_trains_exports_and_evaluates(trained):
    """A variant with MMEL's multi-layer Â: its layer weights train, export and explain its test split."""
    root = trained.root
    params = dataclasses.replace(trained, variants={
        **trained.variants, "megl_multilayer": VariantConfig(visual=True, text=True, consistency=True, explainer="multilayer")})
    run = run_layout(root / ROOT, RunKey("object_me", "resnet18", "megl_multilayer", 0))
    train(params, "object_me", "resnet18", "megl_multilayer", run, max_steps=4)
    weights = load_file(run.model_dir / "model.safetensors")["explainer.layer_logits"]
    assert weights.shape == (2,) and not torch.equal(weights, torch.zeros(2))  # trained away from uniform
    model, _ = load_exported(run.model_dir)
    assert torch.equal(model.explainer.layer_logits.detach(), weights)
    metrics = evaluate(params, "object_me", "resnet18", "megl_multilayer", run_paths(root, "resnet18", "megl_multilayer"))
    assert metrics["explainer"] == "multilayer" and 0 <= metrics["miou"] <= 1


def test_not_applicable_run_is_evaluated_as_na(trained):
    root = trained.root
    train(trained, "object_me", "vit_b16", "cdep", run_layout(root / ROOT, RunKey("object_me", "vit_b16", "cdep", 0)))
    paths = run_paths(root, "vit_b16", "cdep")
    metrics = evaluate(trained, "object_me", "vit_b16", "cdep", paths)
    assert "ResNet" in metrics["not_applicable"] and "accuracy" not in metrics
    for f in (paths.test_metrics, paths.efficiency, paths.per_class_f1, paths.confusion):
        assert f.is_file()
    assert (paths.results_dir / "NOT_APPLICABLE.txt").is_file()
