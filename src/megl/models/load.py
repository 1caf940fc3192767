"""Rebuild an exported model (models/<d>/<b>/<v>/) for evaluation: config.json + model.safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from megl.config import VariantConfig, build_dataclass
from megl.data.records import DataError
from megl.models.backbones import BackboneConfig, build_classifier
from megl.models.megl import MEGL


def load_exported(model_dir: Path) -> tuple[MEGL, dict]:
    """The MEGL module in eval mode and its resolved config."""
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
    weights_path = model_dir / "model.safetensors"
    if config["variant_terms"].get("family") == "llava":
        return _load_mllm(model_dir, config, weights_path), config
    bb = config["backbone_params"]
    classifier = build_classifier(BackboneConfig(config["backbone"], bb["profile"], bb["pretrained_path"], bb.get("arch")), len(config["classes"]))
    variant = VariantConfig(**config["variant_terms"])
    text_head = None
    if variant.text:
        from megl.models.sdtg import SDTGHead, TextHeadConfig
        from megl.models.tokenizer import load_tokenizer

        head_cfg = build_dataclass(TextHeadConfig, dict(config["text_head"]), "text_head")
        text_head = SDTGHead(head_cfg, classifier.feature_dim, load_tokenizer(model_dir / "tokenizer"))
    grid = config["grid"]
    model = MEGL(
        classifier, text_head, variant, torch.zeros(grid, grid),
        lambda_visual=0.0, lambda_textual=0.0, cam_mode="detached", cam_eps=config["train"]["cam_eps"],
        image_size=config.get("image_size"),
        explainer=explainer_name(config), explainer_layers=config["train"].get("explainer_layers", 4),
    )
    weights = _read_weights(weights_path)
    # a head on local checkpoints exports only what training changed; its frozen parts come from them
    strict = text_head is None or text_head.cfg.profile == "tiny"
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or (strict and missing):
        raise ValueError(f"{model_dir / 'model.safetensors'}: missing {missing[:5]}, unexpected {unexpected[:5]}")
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


def _load_mllm(model_dir: Path, config: dict, weights_path: Path):
    """An exported MLLM baseline: its tokenizer folder and weights (paper: LoRA + projector over
    the local LLaVA folder its config names)."""
    from megl.config import MLLMConfig
    from megl.models.llava_baseline import LlavaBaseline
    from megl.models.tokenizer import load_tokenizer

    terms = config["variant_terms"]
    mllm = build_dataclass(MLLMConfig, dict(terms.get("mllm") or {}), "variant_terms.mllm")
    tokenizer = load_tokenizer(model_dir / "tokenizer") if mllm.profile == "tiny" else None
    model = LlavaBaseline(mllm, config["classes"], "cot" if terms["text"] else "vqa", tokenizer=tokenizer)
    try:
        model.load_checkpoint_state_dict(_read_weights(weights_path))
    except KeyError as exc:
        raise ValueError(f"{weights_path}: {exc}") from None
    return model.eval()
