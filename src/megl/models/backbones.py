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
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from transformers import ResNetConfig, ResNetModel, ViTConfig, ViTModel

# Inputs are pixels in [0, 1]; the classifier normalises them itself (ImageNet statistics, as the
# pretrained ResNet-18 / ViT-B/16 checkpoints expect), so the text head can use the same tensor.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    name: Literal["resnet18", "vit_b16"]
    profile: Literal["tiny", "paper"] = "tiny"
    pretrained_path: str | None = None


@dataclasses.dataclass
class ClassifierOutput:
    logits: torch.Tensor  # (B, num_classes)
    activations: torch.Tensor  # (B, C, h, w): the Grad-CAM layer, in the graph
    features: torch.Tensor  # (B, C', h', w'): spatial features for the text head's V_I


def _pretrained(cls, cfg: BackboneConfig, **kwargs):
    path = Path(cfg.pretrained_path)
    if not path.is_dir():
        raise FileNotFoundError(f"backbone {cfg.name}: pretrained_path {path} is not a folder of local weights")
    return cls.from_pretrained(path, local_files_only=True, **kwargs)


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
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ResNetClassifier(nn.Module):
    def __init__(self, cfg: BackboneConfig, num_classes: int) -> None:
        super().__init__()
        self.normalise = _Normalise()
        if cfg.pretrained_path:
            self.body = _pretrained(ResNetModel, cfg)
        else:
            self.body = ResNetModel(resnet_config(cfg.profile))
        self.cam_layer = nn.Identity()
        self.feature_dim = self.body.config.hidden_sizes[-1]
        self.head = nn.Linear(self.feature_dim, num_classes)

    def forward(self, pixels: torch.Tensor) -> ClassifierOutput:
        x = self.body.embedder(self.normalise(pixels))
        for stage in self.body.encoder.stages:
            x = stage(x)
        a = self.cam_layer(x)
        logits = self.head(a.mean(dim=(2, 3)))
        return ClassifierOutput(logits=logits, activations=a, features=a)


class ViTClassifier(nn.Module):
    def __init__(self, cfg: BackboneConfig, num_classes: int) -> None:
        super().__init__()
        self.normalise = _Normalise()
        if cfg.pretrained_path:
            # eager attention: fused SDPA has no double backward, and the CAM loss needs one
            self.body = _pretrained(ViTModel, cfg, add_pooling_layer=False, attn_implementation="eager")
        else:
            self.body = ViTModel(vit_config(cfg.profile), add_pooling_layer=False)
        if self.body.config._attn_implementation != "eager":
            raise ValueError("ViT must use eager attention: a Grad-CAM loss needs double backward")
        self.cam_layer = nn.Identity()
        self.feature_dim = self.body.config.hidden_size
        self.grid = self.body.config.image_size // self.body.config.patch_size
        self.head = nn.Linear(self.feature_dim, num_classes)

    def forward(self, pixels: torch.Tensor) -> ClassifierOutput:
        h = self.body.embeddings(self.normalise(pixels))
        layers = self.body.layers
        for layer in layers[:-1]:
            h = layer(h)
        b, n, d = h.shape
        grid = h[:, 1:].transpose(1, 2).reshape(b, d, self.grid, self.grid)
        a = self.cam_layer(grid)
        h = torch.cat([h[:, :1], a.flatten(2).transpose(1, 2)], dim=1)
        h = self.body.layernorm(layers[-1](h))
        logits = self.head(h[:, 0])
        features = h[:, 1:].transpose(1, 2).reshape(b, d, self.grid, self.grid)
        return ClassifierOutput(logits=logits, activations=a, features=features)


def build_classifier(cfg: BackboneConfig, num_classes: int) -> nn.Module:
    if cfg.name == "resnet18":
        return ResNetClassifier(cfg, num_classes)
    if cfg.name == "vit_b16":
        return ViTClassifier(cfg, num_classes)
    raise ValueError(f"unknown backbone {cfg.name!r}")
