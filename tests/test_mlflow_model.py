"""The trained model in MLflow (megl.models.mlflow_model, logged by megl.train): every tracked
training run registers a new version of `megl-<dataset>-<backbone>-<variant>`, which loads from the
registry and explains an image (class, probabilities, CAM), in this process and through
`mlflow models predict`; a run's inputs are the dataset splits it read, with the manifest's
digest; and none of it changes a DVC output. Real MLflow on a SQLite store of the module's own,
tiny models on the generated data."""

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from megl import tracking
from megl.data.dataset import ExplanationDataset
from megl.layout import RunKey, data_dir, run_layout
from megl.models.load import load_exported
from megl.train import train

KEY = RunKey("object_me", "resnet18", "megl", 0)
NAME = "megl-object_me-resnet18-megl"
CONTEXT = "mlflow.data.context"


@pytest.fixture(scope="module")
def registry(small_params, tmp_path_factory):
    """Two tracked training runs of object_me/resnet18/megl (seeds 0 and 1) in a store of their own:
    (tracking URI, client, the runs' layouts)."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{root}/mlflow.db"
    tracked = dataclasses.replace(small_params, tracking=dataclasses.replace(small_params.tracking, enabled=True))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv(tracking.PARENT_RUN_ENV, raising=False)
        layouts = []
        for seed in (0, 1):
            params = dataclasses.replace(tracked, train=dataclasses.replace(tracked.train, seed=seed))
            layouts.append(run_layout(root, dataclasses.replace(KEY, seed=seed)))
            train(params, KEY.dataset, KEY.backbone, KEY.variant, layouts[-1], max_steps=2)
        yield uri, MlflowClient(uri), layouts


def versions(client):
    return sorted(client.search_model_versions(f"name = '{NAME}'"), key=lambda v: int(v.version))


def test_names():
    assert tracking.registered_model_name("object_me_varied", "resnet18", "megl") == "megl-object_me_varied-resnet18-megl"


def test_each_training_run_registers_a_version(registry):
    _, client, layouts = registry
    found = versions(client)
    assert [int(v.version) for v in found] == [1, 2]
    assert [client.get_run(v.run_id).info.run_name for v in found] == ["object_me/resnet18/megl/s0", "object_me/resnet18/megl/s1"]
    for version, layout, seed in zip(found, layouts, ("0", "1")):
        assert version.tags.items() >= (tracking.run_tags("object_me", "resnet18", "megl", int(seed)) | {
            tracking.MODEL_DIGEST_TAG: tracking.model_digest(layout.model_dir)}).items()
        run = client.get_run(version.run_id)
        assert [f"models:/{o.model_id}" for o in run.outputs.model_outputs] == [version.source]  # the run's model


def test_a_version_holds_the_exported_folder_and_tracking_changes_no_output(registry, small_params, tmp_path):
    """The registered model carries DVC's model folder byte for byte, and logging it (and the
    datasets) changes none of DVC's outputs: the same run untracked writes the same bytes."""
    import mlflow

    _, _, layouts = registry
    downloaded = Path(mlflow.artifacts.download_artifacts(f"models:/{NAME}/1", dst_path=str(tmp_path / "v1")))
    (folder,) = (downloaded / "artifacts").iterdir()
    assert tracking.model_digest(folder) == tracking.model_digest(layouts[0].model_dir)

    untracked = run_layout(tmp_path / "untracked", KEY)
    assert not small_params.tracking.enabled and small_params.train.seed == KEY.seed
    train(small_params, KEY.dataset, KEY.backbone, KEY.variant, untracked, max_steps=2)
    assert tracking.model_digest(untracked.model_dir) == tracking.model_digest(layouts[0].model_dir)
    assert untracked.train_metrics.read_bytes() == layouts[0].train_metrics.read_bytes()
    assert untracked.history.read_bytes() == layouts[0].history.read_bytes()


def one_test_image(small_params) -> tuple[np.ndarray, list[str]]:
    test_set = ExplanationDataset(data_dir(small_params.root, "object_me"), "test", small_params.backbone("resnet18").grid)
    return np.asarray(test_set.images[test_set.rows[:1]]), test_set.classes


def test_a_version_loads_from_the_registry_and_explains_an_image(registry, small_params):
    import mlflow

    _, _, layouts = registry
    image, classes = one_test_image(small_params)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}/1")
    assert model.metadata.get_input_schema().to_dict() == [
        {"type": "tensor", "tensor-spec": {"dtype": "uint8", "shape": (-1, *image.shape[1:])}}]
    (row,) = model.predict(image).to_dict("records")
    probabilities, cam = np.asarray(row["probabilities"]), np.asarray(row["cam"])
    grid = small_params.backbone("resnet18").grid
    assert probabilities.shape == (len(classes),) and abs(probabilities.sum() - 1) < 1e-9
    assert row["class_id"] == probabilities.argmax() and row["class"] == classes[row["class_id"]]
    assert row["probability"] == probabilities[row["class_id"]]
    assert cam.shape == (grid, grid) and 0 <= cam.min() and cam.max() <= 1
    assert row["explanation"] is None  # generated only when asked for

    # the project's own loader on the exported folder (megl explain's path) gives the same answer
    exported, _ = load_exported(layouts[0].model_dir)
    logits, expected_cam, _ = exported.explain(torch.from_numpy(image).permute(0, 3, 1, 2).float().div(255))
    assert row["class_id"] == int(logits.argmax()) and np.allclose(cam, expected_cam[0].numpy(), atol=1e-6)

    (texted,) = model.predict(image, params={"explanation": True}).to_dict("records")
    assert isinstance(texted["explanation"], str) and texted["explanation"] and texted["class_id"] == row["class_id"]
    with pytest.raises(Exception, match="dtype"):  # the signature takes images as stored: uint8
        model.predict(image.astype(np.float32) / 255)


@pytest.mark.slow
def test_mlflow_models_predict_gives_the_same_class(registry, small_params, tmp_path):
    import mlflow

    uri, _, _ = registry
    image, _ = one_test_image(small_params)
    expected = mlflow.pyfunc.load_model(f"models:/{NAME}/2").predict(image)["class"][0]
    (tmp_path / "input.json").write_text(json.dumps({"inputs": image.tolist()}))
    out = subprocess.run(
        [str(Path(sys.executable).parent / "mlflow"), "models", "predict", "-m", f"models:/{NAME}/2", "--env-manager", "local",
         "-i", str(tmp_path / "input.json"), "-t", "json", "-o", str(tmp_path / "output.json")],
        env={**os.environ, "MLFLOW_TRACKING_URI": uri}, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (prediction,) = json.loads((tmp_path / "output.json").read_text())["predictions"]
    assert prediction["class"] == expected and len(prediction["cam"]) == small_params.backbone("resnet18").grid


def split_inputs(run) -> set[tuple[str, str, str]]:
    return {(i.dataset.name, i.dataset.digest, {t.key: t.value for t in i.tags}[CONTEXT]) for i in run.inputs.dataset_inputs}


def test_a_runs_inputs_are_its_splits_with_the_manifests_digest(registry, small_params, tmp_path):
    _, client, layouts = registry
    manifest = data_dir(small_params.root, "object_me") / "manifest.parquet"
    md5 = hashlib.md5(manifest.read_bytes()).hexdigest()  # what dvc.lock records for the file
    run_id = versions(client)[0].run_id
    assert split_inputs(client.get_run(run_id)) == {("object_me/train", md5, "train"), ("object_me/val", md5, "validation")}
    dataset = next(i.dataset for i in client.get_run(run_id).inputs.dataset_inputs if i.dataset.name == "object_me/train")
    assert json.loads(dataset.source) == {"uri": "data/object_me/manifest.parquet"}  # the same path in every clone
    train_rows = len(ExplanationDataset(manifest.parent, "train", small_params.backbone("resnet18").grid))
    assert json.loads(dataset.profile)["num_rows"] == train_rows

    # evaluation adds the test split to the same run; the validation split stays one input
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "gallery.html").write_text("<p>")
    name = tracking.run_name("object_me", "resnet18", "megl", 0)
    splits = tracking.DatasetSplits(small_params.root, "object_me", {"val": "validation", "test": "test"})
    assert tracking.log_to_training_run(small_params.root, "megl", name, tracking.run_tags("object_me", "resnet18", "megl", 0),
                                        tracking.model_digest(layouts[0].model_dir), {"test/accuracy": 0.5},
                                        tmp_path / "evaluation", "evaluation", splits=splits) == (run_id, True)
    inputs = client.get_run(run_id).inputs.dataset_inputs
    assert len(inputs) == 3 and split_inputs(client.get_run(run_id)) == {
        ("object_me/train", md5, "train"), ("object_me/val", md5, "validation"), ("object_me/test", md5, "test")}
    assert tracking.manifest_digest(manifest.parent) == md5
