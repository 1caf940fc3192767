"""README.md of an exported model folder: a model card as Hugging Face folders carry one (what the
model is, what it was trained on and how, how to load it, and what it is not). Built from the
export's config alone, with no date, path or run id in it, so that the folder's bytes still depend
on the params alone (DVC's cache relies on it). Test metrics are not in it: the evaluate stage
computes them after the folder is written (metrics/<run>/test.json)."""

from __future__ import annotations

import json

from megl import methods
from megl.config import VariantConfig


def _frontmatter(config: dict, method: str) -> list[str]:
    tags = ["megl", "explanation-guided-learning", "grad-cam", method]
    return ["---", "library_name: megl", f"tags: {json.dumps(tags)}", f"datasets: {json.dumps([config['dataset']])}",
            "metrics: [\"accuracy\", \"f1\", \"miou\"]", "---", ""]


def _origin(backbone: dict) -> str:
    if backbone.get("pretrained_path"):
        return f"initialised from the local folder `{backbone['pretrained_path'].rstrip('/').split('/')[-1]}`, then fine-tuned"
    return "random initialisation, trained from scratch"


def model_card(config: dict) -> str:
    """The card's text for an export's config.json contents."""
    variant = VariantConfig(**{k: v for k, v in config["variant_terms"].items() if k not in ("mllm",)})
    method = methods.get(variant.method)
    train, backbone = config["train"], config["backbone_params"]
    run = f"{config['dataset']}/{config['backbone']}/{config['variant']}/s{train['seed']}"
    classes = config["classes"]
    shown = ", ".join(classes[:10]) + (f", ... ({len(classes)} in all)" if len(classes) > 10 else "")
    own = {k: v for k, v in config["variant_terms"].items() if k in method.knobs and k != "mllm"}
    label = method.row_label(variant).strip("- ") or variant.method
    mllm = config["variant_terms"].get("mllm") or {}
    tiny = (mllm.get("profile", "tiny") == "tiny") if method.model == "mllm" else (
        backbone.get("profile") == "tiny" and not backbone.get("pretrained_path"))
    lines = _frontmatter(config, variant.method) + [
        f"# {label}: `{run}`",
        "",
        f"Trained by the megl pipeline (`stages/train.py`) with the method `{variant.method}`"
        + (f" ({label})" if label != variant.method else "")
        + ("; the training supervises its saliency map." if method.uses_cam(variant) else "."),
        "",
        "## Training",
        "",
        f"- Data: the dataset `{config['dataset']}` of the pipeline's params, its train split; {len(classes)} classes: {shown}.",
        (f"- Model: the MLLM baseline's own (`mllm` profile `{mllm.get('profile', 'tiny')}`"
         + (f", from `{str(mllm['model_path']).rstrip('/').split('/')[-1]}`" if mllm.get("model_path") else ", random init")
         + f"), trained once per dataset, filed under the backbone `{config['backbone']}`." if method.model == "mllm" else
         f"- Backbone: `{config['backbone']}` (profile `{backbone.get('profile')}`), {_origin(backbone)}; "
         f"{config.get('image_size') or '?'} px images, CAM grid {config['grid']} x {config['grid']}."),
        f"- Method: `{variant.method}`" + (f", its values {json.dumps(own, sort_keys=True)}." if own else "."),
        f"- Schedule: {train['epochs']} epochs, batch {train['batch_size']}, lr {train['lr']:g}, seed {train['seed']}; "
        + ("" if method.model == "mllm" else
           f"λ_visual {train['lambda_visual']:g}, λ_textual {train['lambda_textual']:g} (where the method reads them); ")
        + f"exported: epoch {config['best_epoch']} (`train.checkpoint: {train.get('checkpoint', 'best_val')}`).",
        ("" if method.model == "mllm" else
         f"- Explainer: `{config['variant_terms'].get('explainer') or train.get('explainer', 'gradcam')}`.")
        + (" It writes explanations (`tokenizer/` here)." if config.get("writes_explanations") else ""),
        "",
        "## What it is not",
        "",
        ("A tiny random-initialised model trained for minutes on a CPU, on a benchmark made to test explanation-guided "
         "learning: a test bed for the method, not a model for real images." if tiny else
         "Fine-tuned for a few epochs on one benchmark of the pipeline: a research artefact, not a product."),
        "",
        "## Use",
        "",
        "```",
        f"megl explain models/{run} photo.jpg        # class, probability, the map over the image",
        "```",
        "",
        "```python",
        "from megl.models.load import load_exported",
        "",
        f"model, config = load_exported(\"models/{run}\")  # eval mode; config: this folder's config.json",
        "```",
        "",
        f"Test metrics: `metrics/{run}/test.json` (the evaluate stage), validation: `val.json` beside it.",
        "",
    ]
    return "\n".join(lines)
