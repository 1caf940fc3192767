"""The model a run trains, fresh (`build_model`) or rebuilt from an export (`rebuild`): the one place
that turns a method's entry (megl.methods: `model` is "classifier" or "mllm") into the module
keeping the model contract (megl.models.contract). The loop, evaluation and `megl explain` never
ask which one they got.
"""

from __future__ import annotations

from pathlib import Path

import torch

from megl import methods
from megl.config import BackboneConfig, ConfigError, MLLMConfig, Params, VariantConfig, build_dataclass
from megl.models.backbones import build_classifier


def build_model(params: Params, dataset, backbone: str, variant: str, texts: list[str]):
    """The module a run trains; a tiny profile's tokenizer is trained on the train explanations
    (and, for an MLLM, the questions). `dataset`: the run's train split (megl.data.dataset)."""
    var = params.variant(variant)
    return BUILD[methods.get(var.method).model](params, dataset, backbone, var, texts)


def _classifier_model(params: Params, dataset, backbone: str, var: VariantConfig, texts: list[str]):
    from megl.models.megl import MEGL

    bb = params.backbone(backbone)
    classifier = build_classifier(bb, len(dataset.classes))
    size = dataset.images.shape[1]
    with torch.no_grad():
        cam_grid = classifier.eval()(torch.zeros(1, 3, size, size)).activations.shape[-1]
    if cam_grid != bb.grid:
        raise ConfigError(
            f"backbones.{backbone}.grid is {bb.grid} but {backbone} ({bb.profile}) gives a {cam_grid}x{cam_grid} "
            f"CAM at {size} px; set grid: {cam_grid} (and add it to saliency.grid_sizes)"
        )
    classifier.train()
    text_head, tokenizer = None, None
    if var.text:
        from megl.models.sdtg import SDTGHead
        from megl.models.tokenizer import head_tokenizer

        head_cfg = params.text_head
        tokenizer = head_tokenizer(head_cfg.llm_path, texts, head_cfg.vocab_size)
        text_head = SDTGHead(head_cfg, classifier.feature_dim, tokenizer)
    t = params.train
    return MEGL(
        classifier, text_head, var, dataset.mean_map,
        lambda_visual=t.lambda_visual, lambda_textual=t.lambda_textual, cam_mode=t.cam_mode, cam_eps=t.cam_eps,
        consistency_input=t.consistency_input, consistency_temperature=t.consistency_temperature, image_size=size,
        explainer=t.explainer, explainer_layers=t.explainer_layers, tokenizer=tokenizer, visual_l1=t.visual_l1,
        consistency_target=t.consistency_target,
    )


def _mllm_model(params: Params, dataset, backbone: str, var: VariantConfig, texts: list[str]):
    from megl.models.llava_baseline import LlavaBaseline

    questions = sorted({q for q in dataset.manifest["question"].iloc[dataset.rows].dropna()})
    return LlavaBaseline(var.mllm or MLLMConfig(), dataset.classes, _mllm_mode(var), texts=texts + questions)


def _mllm_mode(var: VariantConfig) -> str:
    """Fine-tune-CoT writes "{explanation} --> {class}"; the plain baseline answers with the class."""
    return "cot" if methods.get(var.method).writes_explanations(var) else "vqa"


BUILD = {"classifier": _classifier_model, "mllm": _mllm_model}


# --- from an export (megl.models.load) ----------------------------------------------------------------


def rebuild(config: dict, model_dir: Path):
    """The module an exported config describes, with random weights (the caller loads them)."""
    variant = build_dataclass(VariantConfig, dict(config["variant_terms"]), "variant_terms")
    return REBUILD[methods.get(variant.method).model](config, variant, model_dir)


def _classifier_from_export(config: dict, variant: VariantConfig, model_dir: Path):
    from megl.models.load import explainer_name
    from megl.models.megl import MEGL

    backbone = build_dataclass(BackboneConfig, {"name": config["backbone"]} | dict(config["backbone_params"]), "backbone_params")
    classifier = build_classifier(backbone, len(config["classes"]))
    text_head, tokenizer = None, None
    if variant.text:
        from megl.config import TextHeadConfig
        from megl.models.sdtg import SDTGHead
        from megl.models.tokenizer import load_tokenizer

        head_cfg = build_dataclass(TextHeadConfig, dict(config["text_head"]), "text_head")
        tokenizer = load_tokenizer(model_dir / "tokenizer")
        text_head = SDTGHead(head_cfg, classifier.feature_dim, tokenizer)
    grid = config["grid"]
    return MEGL(
        classifier, text_head, variant, torch.zeros(grid, grid),
        lambda_visual=0.0, lambda_textual=0.0, cam_mode="detached", cam_eps=config["train"]["cam_eps"],
        image_size=config.get("image_size"), explainer=explainer_name(config),
        explainer_layers=config["train"].get("explainer_layers", 4), tokenizer=tokenizer,
    )


def _mllm_from_export(config: dict, variant: VariantConfig, model_dir: Path):
    """Its tokenizer folder (tiny); the paper profile reloads the local LLaVA folder its config names."""
    from megl.models.llava_baseline import LlavaBaseline
    from megl.models.tokenizer import load_tokenizer

    mllm = variant.mllm or MLLMConfig()
    tokenizer = load_tokenizer(model_dir / "tokenizer") if mllm.profile == "tiny" else None
    return LlavaBaseline(mllm, config["classes"], _mllm_mode(variant), tokenizer=tokenizer)


REBUILD = {"classifier": _classifier_from_export, "mllm": _mllm_from_export}
