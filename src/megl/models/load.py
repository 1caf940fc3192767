"""Rebuild an exported model (models/<d>/<b>/<v>/s<seed>/) for evaluation or `megl explain`:
config.json + model.safetensors (+ tokenizer/), checked, into the module keeping the model
contract (megl.models.contract; megl.models.build.rebuild picks it)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from megl.data.records import DataError


def load_exported(model_dir: Path):
    """The model in eval mode and its resolved config."""
    from megl.models.build import rebuild

    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: no exported model here (run the train stage first)")
    try:
        config = json.loads(config_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{config_path}: not valid JSON ({exc})") from None
    keys = ("backbone", "backbone_params", "classes", "grid", "variant_terms", "text_head", "train")
    missing = [k for k in keys if not isinstance(config, dict) or k not in config]
    if missing:
        raise DataError(f"{config_path}: not an exported megl model config (missing {missing})")
    model = rebuild(config, model_dir)
    weights_path = model_dir / "model.safetensors"
    try:
        model.load_weights(_read_weights(weights_path))
    except ValueError as exc:
        raise ValueError(f"{weights_path}: {exc}") from None
    return model.eval(), config


def explainer_name(config: dict) -> str:
    """The Â an exported model trained and is evaluated with: its variant's, else train's (models
    exported before the multi-layer explainer have neither: Grad-CAM)."""
    return config["variant_terms"].get("explainer") or config["train"].get("explainer", "gradcam")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except Exception as exc:  # safetensors raises its own error type for a damaged header or body
        raise DataError(f"{path}: cannot be read as safetensors, truncated or corrupt ({exc})") from None
