"""An exported classifier (models/<d>/<b>/<v>/s<seed>/) as an MLflow model: what megl.tracking logs
and registers for every training run of a method with a saliency map.

    mlflow.pyfunc.load_model("models:/megl-object_me_varied-resnet18-megl/1").predict(images)

Input: uint8 RGB images, shape (n, size, size, 3), size the model's image size (the dataset's: 64
for the synthetic benchmarks), as images.npy stores them (megl.data.images.decode reads any file so).
Output: a DataFrame, one row per image: `class` (the predicted class's name), `class_id`,
`probability` (of that class), `probabilities` (every class, in class_id order), `cam` (the
explainer's map of the predicted class on the CAM grid, grid x grid, in [0, 1]) and `explanation`:
the text head's generated explanation when asked for with params={"explanation": True} (greedy
decoding costs about a second per batch on a CPU), else None, as for a model without a text head.

The MLflow model holds the exported folder unchanged as its artifact `model_dir` and loads it with
megl.models.load (weights from safetensors only), through MLflow's models from code
(mlflow_model_code.py: nothing is pickled); it carries the megl package it was logged with.
This module imports mlflow: only megl.tracking (tracking on) and MLflow's loader import it.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

CODE = Path(__file__).with_name("mlflow_model_code.py")  # what MLflow runs to load the model
MODEL_ARTIFACT = "model_dir"  # the exported folder's name among the MLflow model's artifacts
BATCH = 32  # images explained at once: bounds the memory a large request takes
# What loading and predicting imports (megl's dependencies on this path, and MLflow), pinned at the
# versions that logged the model: listed, because MLflow's inference of them loads the model in a
# subprocess (seconds per run).
REQUIREMENTS = ("mlflow", "torch", "numpy", "pandas", "pyarrow", "pillow", "pyyaml", "safetensors", "transformers",
                "tokenizers", "peft")


class ExplainedClassifier(mlflow.pyfunc.PythonModel):
    """The pyfunc model: images in, class, probabilities, map and explanation out (module docstring)."""

    def load_context(self, context) -> None:
        from megl.models.load import load_exported

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model, self.config = load_exported(Path(context.artifacts[MODEL_ARTIFACT]))
        self.model = model.to(self.device)

    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        text = bool((params or {}).get("explanation", False))
        batches = [explain_batch(self.model, self.config["classes"], model_input[i : i + BATCH], self.device, text)
                   for i in range(0, len(model_input), BATCH)]
        return pd.concat(batches, ignore_index=True)


def explain_batch(model, classes: list[str], images: np.ndarray, device: torch.device, text: bool) -> pd.DataFrame:
    """megl explain's prediction (megl.explain_cli) for a batch of images as the dataset stores them."""
    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255).to(device)
    logits, cam, features = model.explain(pixels)
    probs = logits.double().softmax(1).cpu().numpy()
    ids = logits.argmax(1).cpu().numpy()  # the class explain() mapped
    generate = text and model.text_head is not None
    explanations = model.text_head.generate(pixels, cam, features) if generate else [None] * len(ids)
    return pd.DataFrame({
        "class": [classes[i] for i in ids],
        "class_id": ids.astype(np.int64),
        "probability": probs[np.arange(len(ids)), ids],
        "probabilities": probs.tolist(),
        "cam": cam.cpu().double().numpy().tolist(),
        "explanation": explanations,
    })


def signature(image_size: int) -> ModelSignature:
    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, image_size, image_size, 3))])
    outputs = Schema([
        ColSpec("string", "class"), ColSpec("long", "class_id"), ColSpec("double", "probability"),
        ColSpec(Array("double"), "probabilities"), ColSpec(Array(Array("double")), "cam"),
        ColSpec("string", "explanation", required=False),
    ])
    return ModelSignature(inputs, outputs, ParamSchema([ParamSpec("explanation", "boolean", False)]))


def pip_requirements() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in REQUIREMENTS]


def log_model(model_dir: Path, example: np.ndarray, registered_name: str, tags: dict[str, str]):
    """Log the exported folder as an MLflow model of the active run and register it as a new
    version of `registered_name` (the version carries `tags`). `example`: images the model takes
    (the signature's input example). Returns MLflow's ModelInfo."""
    import megl

    image_size = json.loads((Path(model_dir) / "config.json").read_text())["image_size"]
    return mlflow.pyfunc.log_model(
        name="model", python_model=CODE, artifacts={MODEL_ARTIFACT: str(model_dir)},
        code_paths=[str(Path(megl.__file__).parent)], pip_requirements=pip_requirements(),
        signature=signature(image_size), input_example=example, registered_model_name=registered_name, tags=tags,
    )
