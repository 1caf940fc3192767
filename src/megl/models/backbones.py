"""Image classifiers on transformers' ResNet and ViT (no torchvision / timm on these machines).

Each classifier runs its forward by hand so that the tensor Grad-CAM differentiates is produced
inside the one forward pass, in the autograd graph, as a (B, C, h, w) map:
  ResNet: the last stage's output (then average pool -> linear head).
  ViT:    the patch tokens entering the last block, reshaped to the patch grid (CLS dropped). The
          last block's output feeds the head only through CLS, so its own patch tokens would get
          zero gradient; one block earlier is the usual Grad-CAM layer for ViTs.
`cam_layer` is an identity module on that map, so hook-based tools (Captum) see the same tensor.

Profiles: `tiny` (random init, CPU minutes, 8x8 CAM grid at 64 px) and `paper` (ResNet-18 /
ViT-B/16 at 224 px). `pretrained_path` loads local weights; nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, DeiTModel, Dinov2Model, ResNetConfig, ResNetModel, ViTConfig, ViTModel

from megl.config import BackboneConfig  # noqa: F401  (the one backbone class, defined with the params; re-exported)

# Inputs are pixels in [0, 1]; the classifier normalises them itself (ImageNet statistics, as the
# pretrained ResNet-18 / ViT-B/16 checkpoints expect), so the text head can use the same tensor.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# model_type (a checkpoint's config.json) -> the transformers encoder a ViT backbone loads it as
VIT_FAMILY = {"vit": ViTModel, "deit": DeiTModel, "dinov2": Dinov2Model}


@dataclasses.dataclass
class ClassifierOutput:
    logits: torch.Tensor  # (B, num_classes)
    activations: torch.Tensor  # (B, C, h, w): the Grad-CAM layer, in the graph
    features: torch.Tensor  # (B, C', h', w'): spatial features for the text head's V_I
    # the maps of the last `cam_depths` depths, deepest (= activations) last, each in the graph
    # (megl.models.multilayer_cam)
    stages: list[torch.Tensor] = dataclasses.field(default_factory=list)


def _local_folder(cfg: BackboneConfig) -> Path:
    path = Path(cfg.pretrained_path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"backbone {cfg.name}: pretrained_path {path} is not a folder of local transformers weights (no config.json)")
    return path


def _pretrained(cls, cfg: BackboneConfig, **kwargs):
    return cls.from_pretrained(_local_folder(cfg), local_files_only=True, **kwargs)


def _vit_encoder(cfg: BackboneConfig) -> nn.Module:
    if not cfg.pretrained_path:
        return ViTModel(vit_config(cfg.profile), add_pooling_layer=False)
    model_type = AutoConfig.from_pretrained(_local_folder(cfg), local_files_only=True).model_type
    if model_type not in VIT_FAMILY:
        raise ValueError(
            f"backbone {cfg.name}: {cfg.pretrained_path} holds a {model_type!r} model; a ViT backbone loads "
            f"one of {sorted(VIT_FAMILY)} (transformers model_type), a ResNet backbone 'resnet'"
        )
    kwargs = {} if model_type == "dinov2" else {"add_pooling_layer": False}
    # eager attention: fused SDPA has no double backward, and the CAM loss needs one
    return _pretrained(VIT_FAMILY[model_type], cfg, attn_implementation="eager", **kwargs)


def pixel_stats(folder: str | None, default: tuple[tuple, tuple]) -> tuple[tuple, tuple]:
    """A checkpoint folder's own pixel statistics (preprocessor_config.json: google ViTs use 0.5 /
    0.5), else `default`."""
    pre = Path(folder) / "preprocessor_config.json" if folder else None
    if pre is not None and pre.is_file():
        stats = json.loads(pre.read_text())
        if "image_mean" in stats and "image_std" in stats:
            return tuple(stats["image_mean"]), tuple(stats["image_std"])
    return default


def _checkpoint_normalisation(cfg: BackboneConfig) -> tuple[tuple, tuple]:
    return pixel_stats(cfg.pretrained_path, (IMAGENET_MEAN, IMAGENET_STD))


def resnet_config(profile: str) -> ResNetConfig:
    if profile == "paper":  # ResNet-18 (microsoft/resnet-18 layout)
        return ResNetConfig(embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2], layer_type="basic")
    return ResNetConfig(embedding_size=16, hidden_sizes=[32, 64], depths=[1, 1], layer_type="basic")


def vit_config(profile: str) -> ViTConfig:
    if profile == "paper":  # ViT-B/16 at 224 px
        return ViTConfig(image_size=224, patch_size=16, attn_implementation="eager")
    return ViTConfig(
        image_size=64, patch_size=8, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=128, attn_implementation="eager",
    )


class _Normalise(nn.Module):
    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ResNetClassifier(nn.Module):
    def __init__(self, cfg: BackboneConfig, num_classes: int) -> None:
        super().__init__()
        self.normalise = _Normalise(*_checkpoint_normalisation(cfg))
        if cfg.pretrained_path:
            self.body = _pretrained(ResNetModel, cfg)
        else:
            self.body = ResNetModel(resnet_config(cfg.profile))
        self.cam_layer = nn.Identity()
        self.feature_dim = self.body.config.hidden_sizes[-1]
        self.head = nn.Linear(self.feature_dim, num_classes)

    @property
    def max_cam_depths(self) -> int:
        return len(self.body.encoder.stages)

    def forward(self, pixels: torch.Tensor, cam_depths: int = 1) -> ClassifierOutput:
        """cam_depths: how many stage outputs (the last ones) `stages` holds."""
        x = self.body.embedder(self.normalise(pixels))
        outputs = []
        for stage in self.body.encoder.stages:
            x = stage(x)
            outputs.append(x)
        a = self.cam_layer(x)
        logits = self.head(a.mean(dim=(2, 3)))
        return ClassifierOutput(logits=logits, activations=a, features=a, stages=outputs[-cam_depths:-1] + [a])


class ViTClassifier(nn.Module):
    def __init__(self, cfg: BackboneConfig, num_classes: int) -> None:
        super().__init__()
        self.normalise = _Normalise(*_checkpoint_normalisation(cfg))
        self.body = _vit_encoder(cfg)
        if self.body.config._attn_implementation != "eager":
            raise ValueError("ViT must use eager attention: a Grad-CAM loss needs double backward")
        self.cam_layer = nn.Identity()
        self.feature_dim = self.body.config.hidden_size
        self.patch = self.body.config.patch_size
        self.head = nn.Linear(self.feature_dim, num_classes)

    @property
    def blocks(self) -> nn.ModuleList:
        # ViT / DeiT: a list of blocks; DINOv2: encoder.layer (a property: not a second registration)
        return self.body.layers if hasattr(self.body, "layers") else self.body.encoder.layer

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.normalise(pixels)
        if isinstance(self.body, Dinov2Model):  # always resizes its position grid to the input
            return self.body.embeddings(x)
        # ViT / DeiT: resize the checkpoint's position grid when the input size differs from it
        return self.body.embeddings(x, interpolate_pos_encoding=x.shape[-1] != self.body.config.image_size)

    @property
    def max_cam_depths(self) -> int:
        return len(self.blocks)

    def forward(self, pixels: torch.Tensor, cam_depths: int = 1) -> ClassifierOutput:
        """cam_depths: `stages` holds the patch tokens entering each of the last cam_depths blocks."""
        h = self._embed(pixels)
        # the patch grid of this input (patch 14: DINOv2; 16: ViT-B/16); the tokens before the
        # patches (CLS; DeiT's distillation token) pass by the CAM layer
        gh, gw = pixels.shape[-2] // self.patch, pixels.shape[-1] // self.patch
        b, n, d = h.shape
        lead = n - gh * gw
        blocks, stages = self.blocks, []
        for i, layer in enumerate(blocks):
            if i >= len(blocks) - cam_depths:
                # the map is routed back into the tokens, so that the logits depend on it (its gradient)
                a = h[:, lead:].transpose(1, 2).reshape(b, d, gh, gw)
                a = self.cam_layer(a) if i == len(blocks) - 1 else a
                stages.append(a)
                h = torch.cat([h[:, :lead], a.flatten(2).transpose(1, 2)], dim=1)
            h = layer(h)
        h = self.body.layernorm(h)
        logits = self.head(h[:, 0])
        features = h[:, lead:].transpose(1, 2).reshape(b, d, gh, gw)
        return ClassifierOutput(logits=logits, activations=stages[-1], features=features, stages=stages)


def build_classifier(cfg: BackboneConfig, num_classes: int) -> nn.Module:
    return {"resnet": ResNetClassifier, "vit": ViTClassifier}[cfg.family](cfg, num_classes)
