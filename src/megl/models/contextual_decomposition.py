"""Contextual decomposition (CD) of megl's ResNet classifier, as CDEP needs it.

CD (Murdoch et al. 2018; Singh et al. 2019, generalised to CNNs) splits every activation into a part
`rel` that comes from a chosen input region and `irrel` from the rest, layer by layer, so that
`rel + irrel` is the normal activation and the final `rel` logits are the region's contribution.
CDEP (Rieger et al., ICML 2020) penalises `rel` of regions marked irrelevant. References:
laura-rieger/deep-explanation-penalization (`cd.py`) and csinva/hierarchical-dnn-interpretations
(`acd/scores/cd_propagate.py`); their code only walks torchvision's ResNet, this walks transformers'.

Rules (`rel`, `irrel` -> `rel'`, `irrel'`):
- start: `rel = m * x`, `irrel = (1 - m) * x` on the *normalised* input, m broadcast over channels;
- conv / linear: `r = f(rel) - f(0)`, `i = f(irrel) - f(0)`, and the bias `f(0)` added back in
  proportion `|r| / (|r| + |i|)` and `|i| / (|r| + |i|)` elementwise; where both are exactly 0 the
  bias is split evenly, as the reference's `+ 1e-20` does (a `where`, not an eps, because 1e-20
  underflows in half precision). So a pre-activation that is exactly 0 in both parts leaks half a
  bias into the empty part: the all-ones / all-zeros invariants hold only up to such exact zeros;
- BatchNorm: affine, so the scale acts on each part and the shift is split like a bias;
- ReLU: `rel' = relu(rel)`, `irrel' = relu(rel + irrel) - relu(rel)`;
- max-pool: indices from `rel + irrel`, both parts gathered with them;
- residual add, average pool: each part separately.

BatchNorm always uses its RUNNING statistics: with batch statistics the normalisation would depend on
the other samples and on how the batch is split, so it would be neither affine nor additive. Hence
`rel + irrel` equals the logits of `classifier.eval()`; in train mode the classifier's own forward
uses batch statistics and differs. CD never updates the running statistics.

Cost: `rel` and `irrel` travel as one tensor `pair = cat([rel, irrel])` (batch 2B), so each conv is
one call on twice the batch, and each BN's scale is folded into the bias-free conv before it (the
same decomposition, one elementwise pass less). Every rule below takes and returns such a pair.
Everything stays differentiable w.r.t. the parameters, through the bias shares too, as in the
reference. Basic and bottleneck blocks are both walked; other activations or layers are refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from megl.models.backbones import ResNetClassifier, ViTClassifier


class UnsupportedBackbone(ValueError):
    """The classifier has no faithful contextual decomposition here."""


def split_pair(pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    half = pair.shape[0] // 2
    return pair[:half], pair[half:]


def split_bias(pair: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Add `bias` (broadcastable to one half) to a bias-free pair, shared in proportion |r| : |i|."""
    rel, irrel = split_pair(pair)
    mag_rel = rel.abs()
    total = mag_rel + irrel.abs()
    nonzero = total > 0
    # the inner where keeps the untaken branch finite, so its gradient is 0 and not NaN
    share = torch.where(nonzero, mag_rel / torch.where(nonzero, total, 1.0), 0.5)
    bias_rel = share * bias
    return torch.cat([rel + bias_rel, irrel + (bias - bias_rel)])


def _conv2d(pair: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor) -> torch.Tensor:
    if conv.padding_mode != "zeros":  # other paddings are not linear in the input alone
        raise UnsupportedBackbone(f"contextual decomposition: conv padding_mode {conv.padding_mode!r}")
    return F.conv2d(pair, weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)


def cd_conv(pair: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    out = _conv2d(pair, conv, conv.weight)
    return out if conv.bias is None else split_bias(out, conv.bias.view(1, -1, 1, 1))


def cd_linear(pair: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    out = F.linear(pair, linear.weight)
    return out if linear.bias is None else split_bias(out, linear.bias)


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as (scale, shift) per channel, whatever `bn.training` is; the running
    statistics are read, never written."""
    if bn.running_mean is None or bn.running_var is None:
        raise UnsupportedBackbone("contextual decomposition needs BatchNorm running statistics")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight
        return scale, bn.bias - bn.running_mean * scale
    return scale, -bn.running_mean * scale


def cd_batchnorm(pair: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    scale, shift = _bn_affine(bn)
    return split_bias(pair * scale.view(1, -1, 1, 1), shift.view(1, -1, 1, 1))


def cd_conv_bn(pair: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> torch.Tensor:
    """cd_batchnorm(cd_conv(pair, conv), bn), with the BN scale folded into the conv weight: for a
    bias-free conv this is the same decomposition (a per-channel scale leaves |r| : |i| unchanged)
    at one elementwise pass less."""
    if conv.bias is not None:
        return cd_batchnorm(cd_conv(pair, conv), bn)
    scale, shift = _bn_affine(bn)
    out = _conv2d(pair, conv, conv.weight * scale.view(-1, 1, 1, 1))
    return split_bias(out, shift.view(1, -1, 1, 1))


def cd_relu(pair: torch.Tensor) -> torch.Tensor:
    rel, irrel = split_pair(pair)
    rel_out = F.relu(rel)
    return torch.cat([rel_out, F.relu(rel + irrel) - rel_out])


def cd_maxpool(pair: torch.Tensor, pool: nn.MaxPool2d) -> torch.Tensor:
    rel, irrel = split_pair(pair)
    # which input wins is decided by the whole activation, exactly as in the normal forward
    out, idx = F.max_pool2d(rel + irrel, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                            pool.ceil_mode, return_indices=True)
    idx = idx.flatten(2).repeat(2, 1, 1)
    return pair.flatten(2).gather(2, idx).view(pair.shape[0], *out.shape[1:])


def _activation(pair: torch.Tensor, act: nn.Module) -> torch.Tensor:
    if isinstance(act, nn.Identity):
        return pair
    if isinstance(act, nn.ReLU):
        return cd_relu(pair)
    raise UnsupportedBackbone(f"contextual decomposition has no rule for activation {type(act).__name__}")


def _conv_layer(pair: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """transformers' ResNetConvLayer / ResNetShortCut: conv -> BatchNorm (-> activation)."""
    pair = cd_conv_bn(pair, layer.convolution, layer.normalization)
    return _activation(pair, layer.activation) if hasattr(layer, "activation") else pair


def _residual_block(pair: torch.Tensor, block: nn.Module) -> torch.Tensor:
    """ResNetBasicLayer and ResNetBottleNeckLayer alike: act(layer(x) + shortcut(x))."""
    shortcut = pair if isinstance(block.shortcut, nn.Identity) else _conv_layer(pair, block.shortcut)
    out = pair
    for layer in block.layer:
        out = _conv_layer(out, layer)
    return _activation(out + shortcut, block.activation)


def cd_logits(classifier: nn.Module, pixels: torch.Tensor, region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rel, irrel) logits, each (B, num_classes), for `region` (B,H,W) or (B,1,H,W) in [0,1] at the
    input resolution; pixels (B,3,H,W) in [0,1] as the classifier takes them. rel + irrel equals
    `classifier.eval()(pixels).logits`, whatever mode the classifier is in."""
    if isinstance(classifier, ViTClassifier):
        raise UnsupportedBackbone("no faithful contextual decomposition exists for ViT (LayerNorm, softmax "
                                  "attention, GELU); CDEP is reported n/a there")
    if not isinstance(classifier, ResNetClassifier):
        raise UnsupportedBackbone(
            f"contextual decomposition supports megl's ResNetClassifier, not {type(classifier).__name__}")
    if not isinstance(classifier.cam_layer, nn.Identity):
        raise UnsupportedBackbone("contextual decomposition expects cam_layer to be an identity")
    if region.dim() == 3:
        region = region.unsqueeze(1)
    if region.shape != (pixels.shape[0], 1, *pixels.shape[2:]):
        raise ValueError(f"region {tuple(region.shape)} does not match pixels {tuple(pixels.shape)}")
    x = classifier.normalise(pixels)
    region = region.to(x.dtype)
    pair = torch.cat([region * x, (1 - region) * x])
    stem = classifier.body.embedder
    pair = cd_maxpool(_conv_layer(pair, stem.embedder), stem.pooler)
    for stage in classifier.body.encoder.stages:
        for block in stage.layers:
            pair = _residual_block(pair, block)
    return split_pair(cd_linear(pair.mean(dim=(2, 3)), classifier.head))
