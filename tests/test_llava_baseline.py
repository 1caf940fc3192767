"""MLLM baselines (LLaVA-1.5 as VQA, Fine-tune-CoT) on tiny random-init models; no downloads."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from megl.config import ConfigError
from megl.models.llava_baseline import (
    IMAGE_TOKEN,
    LlavaBaseline,
    MLLMConfig,
    _tiny_model,
    parse_answer,
    split_cot,
)
from megl.models.tokenizer import load_tokenizer, train_tokenizer

CLASSES = ["red fox", "blue whale"]
EXPLANATION = {0: "the fur is bright red.", 1: "the body is deep blue, and it swims."}
QUESTIONS = ["What animal is this?", "What is shown?", "Which animal is in the picture?", "What is it?"] * 2
LABELS = torch.tensor([0, 1] * 4)
EXPLANATIONS = [EXPLANATION[int(y)] for y in LABELS]
TEXTS = QUESTIONS + EXPLANATIONS


def make_model(mode, seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = MLLMConfig(**{"lora_dropout": 0.0, **overrides})
    return LlavaBaseline(cfg, CLASSES, mode, texts=TEXTS)


def colour_images(labels=LABELS, size=64, seed=0):
    """Class 0 red, class 1 blue, with a little noise: the only signal is the colour."""
    g = torch.Generator().manual_seed(seed)
    colours = {0: torch.tensor([0.9, 0.1, 0.1]), 1: torch.tensor([0.1, 0.2, 0.9])}
    px = torch.stack([colours[int(y)].view(3, 1, 1).expand(3, size, size) for y in labels])
    return (px + 0.05 * torch.randn(px.shape, generator=g)).clamp(0, 1)


def overfit(model, max_steps=150, lr=1e-2):
    """AdamW on the 8 images until the loss is ~0; returns (first loss, last loss)."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    pixels = colour_images()
    model.train()
    first = None
    for _ in range(max_steps):
        loss = model.loss(pixels, QUESTIONS, EXPLANATIONS, LABELS)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        if loss.item() < 0.01:
            break
    return first, loss.item()


@pytest.fixture(scope="module")
def trained_vqa():
    model = make_model("vqa")
    first, last = overfit(model)
    return model, first, last


# ----------------------------------------------------------------- answers


@pytest.mark.parametrize(
    "text, mode, expected",
    [
        ("red fox", "vqa", 0),
        ("Red Fox.", "vqa", 0),  # case, punctuation
        ("  a   BLUE whale! ", "vqa", 1),  # article, spaces
        ("the red-fox", "vqa", 0),  # punctuation inside becomes a space
        ("fox", "vqa", -1),  # part of a class name is not a match
        ("red fox blue whale", "vqa", -1),
        ("", "vqa", -1),
        ("it is orange --> Red fox", "cot", 0),
        ("it points left --> right --> the blue whale.", "cot", 1),  # the LAST separator
        ("it is a red fox", "cot", -1),  # no separator: no answer
        ("red fox -->", "cot", -1),  # empty answer
        ("it swims --> dolphin", "cot", -1),  # unknown class
    ],
)
def test_parse_answer(text, mode, expected):
    assert parse_answer(text, CLASSES, mode) == expected


def test_parse_answer_multiword_and_bad_mode():
    classes = ["riding a bicycle", "playing tennis", "tennis"]
    assert parse_answer("Riding bicycle", classes, "vqa") == 0
    assert parse_answer("playing tennis", classes, "vqa") == 1
    assert parse_answer("the tennis", classes, "vqa") == 2
    with pytest.raises(ValueError, match="mode"):
        parse_answer("tennis", classes, "rank")


def test_split_cot():
    assert split_cot(" it is red --> red fox") == ("it is red", "red fox")
    assert split_cot("a --> b --> c") == ("a --> b", "c")
    assert split_cot(" no answer here ") == ("no answer here", "")


# ----------------------------------------------------------------- sequences


@pytest.mark.parametrize("mode", ["vqa", "cot"])
def test_label_masking(mode):
    model = make_model(mode)
    tok = model.tokenizer
    questions, explanations, labels = ["What animal is this?", "What is it?"], [EXPLANATION[0], "blue."], [0, 1]
    input_ids, attention, target = model.encode_train(questions, explanations, labels)
    assert input_ids.shape == attention.shape == target.shape

    sup = target != -100
    # labels are aligned with input_ids (transformers shifts them inside the loss)
    assert torch.equal(target[sup], input_ids[sup])
    for i in range(2):
        row_sup = sup[i].nonzero().flatten()
        real = int(attention[i].sum())
        assert attention[i, :real].all() and not attention[i, real:].any()  # right padding
        assert row_sup.max() == real - 1 and input_ids[i, real - 1] == tok.eos_token_id  # eos is supervised
        assert torch.equal(row_sup, torch.arange(row_sup.min(), real))  # one contiguous block at the end
        assert (input_ids[i, real:] == model.pad_id).all() and (target[i, real:] == -100).all()
        answer = tok.decode(target[i, sup[i]].tolist(), skip_special_tokens=False)
        if mode == "vqa":
            expected = f"{CLASSES[labels[i]]}<eos>"
        else:
            expected = f"{explanations[i]} --> {CLASSES[labels[i]]}<eos>"
        assert answer == expected.lower()
        # everything before the answer is the prompt, with the image tokens and bos
        prompt = [t for t in input_ids[i, : row_sup.min()].tolist() if t != model.image_token_id]
        # (compared word by word: the Metaspace decoder puts a space after the removed <image>)
        decoded = tok.decode(prompt, skip_special_tokens=True)
        assert decoded.split() == model.prompt(questions[i]).replace(IMAGE_TOKEN, "").lower().split()
        assert decoded.endswith("\nassistant:")
        assert prompt[0] == tok.bos_token_id


def test_image_token_count_and_resize():
    model = make_model("vqa")
    assert model.num_image_tokens == 64  # (64 / 8)²
    ids, _ = model.encode_prompts(["a?", "a much longer question about the picture?"])
    assert ((ids == model.image_token_id).sum(1) == 64).all()
    ids, _, _ = model.encode_train(["a?"], ["x"], [1])
    assert (ids == model.image_token_id).sum() == 64
    # a question holding the placeholder itself would break the image-token count
    with pytest.raises(ValueError, match="exactly one"):
        model.encode_prompts([f"what is {IMAGE_TOKEN}?"])

    small = make_model("vqa", vision_image_size=32)
    assert small.num_image_tokens == 16
    # dataset images at another size are resized to the tower's
    pixels = colour_images(LABELS[:2], size=48)
    assert small.pixel_values(pixels).shape == (2, 3, 32, 32)
    assert torch.isfinite(small.loss(pixels, QUESTIONS[:2], EXPLANATIONS[:2], LABELS[:2]))
    assert small.classify_forward(pixels[:1], QUESTIONS[:1]).shape == (1, len(small.tokenizer))


def test_trainable_parts():
    model = make_model("vqa")
    names = model.trainable_state_dict_keys()
    assert not any("vision_tower" in n for n in names)
    assert all(not p.requires_grad for p in model._vision_tower().parameters())
    assert any("multi_modal_projector" in n for n in names)
    assert any("embed_tokens" in n for n in names) and any("lm_head" in n for n in names)  # tiny: re-learnt
    lora = [n for n in names if "lora_" in n]
    assert lora and all("language_model" in n for n in lora)
    model.train()
    assert not model._vision_tower().training


# ----------------------------------------------------------------- learning


def test_overfit_vqa(trained_vqa):
    model, first, last = trained_vqa
    assert last < 0.05 < first
    ids, explanations = model.predict(colour_images(), QUESTIONS)
    assert ids == LABELS.tolist()
    assert explanations == [""] * 8
    assert model.generate(colour_images()[:2], QUESTIONS[:2]) == ["red fox", "blue whale"]


def test_overfit_cot():
    model = make_model("cot")
    first, last = overfit(model)
    assert last < 0.05 < first
    ids, explanations = model.predict(colour_images(), QUESTIONS)
    assert ids == LABELS.tolist()
    assert explanations == [EXPLANATION[int(y)] for y in LABELS]


def test_batched_generation_equals_one_by_one():
    # A random model: long, arbitrary generations make any padding/position error show.
    model = make_model("cot", seed=3, max_new_tokens=12)
    pixels = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    questions = ["What?", "What animal is in this picture, exactly?", "Is it red?", "Which animal is it?"]
    batched = model.generate(pixels, questions)
    single = [model.generate(pixels[i : i + 1], [q])[0] for i, q in enumerate(questions)]
    assert batched == single
    assert len(set(batched)) > 1  # not a degenerate constant output
    logits = model.classify_forward(pixels, questions)
    for i, q in enumerate(questions):
        torch.testing.assert_close(logits[i : i + 1], model.classify_forward(pixels[i : i + 1], [q]), atol=1e-5, rtol=1e-4)


def test_checkpoint_round_trip(trained_vqa, tmp_path):
    model, _, _ = trained_vqa
    save_file(model.checkpoint_state_dict(), str(tmp_path / "mllm.safetensors"))
    model.tokenizer.save_pretrained(str(tmp_path / "tokenizer"))

    torch.manual_seed(123)  # other random weights: everything must come from the checkpoint
    tok = load_tokenizer(tmp_path / "tokenizer")
    again = LlavaBaseline(model.cfg, CLASSES, "vqa", tokenizer=tok)
    assert again.image_token_id == model.image_token_id
    pixels = colour_images()
    assert again.generate(pixels, QUESTIONS) != model.generate(pixels, QUESTIONS)
    again.load_checkpoint_state_dict(load_file(str(tmp_path / "mllm.safetensors")))
    assert again.generate(pixels, QUESTIONS) == model.generate(pixels, QUESTIONS)
    same = again.classify_forward(pixels, QUESTIONS), model.classify_forward(pixels, QUESTIONS)
    torch.testing.assert_close(*same, atol=0, rtol=0)
    with pytest.raises(KeyError, match="missing"):
        again.load_checkpoint_state_dict(model.trainable_state_dict())


# ----------------------------------------------------------------- paper profile


def test_paper_profile_loads_local_folder(tmp_path):
    folder = tmp_path / "llava-1.5-tiny"
    tok = train_tokenizer(TEXTS + CLASSES, 256)
    tok.add_special_tokens({"extra_special_tokens": [IMAGE_TOKEN]})
    torch.manual_seed(0)
    base = _tiny_model(MLLMConfig(), tok).eval()
    base.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    mean, std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_mean": mean, "image_std": std}))

    cfg = MLLMConfig(profile="paper", model_path=str(folder), lora_r=4, lora_alpha=8)
    model = LlavaBaseline(cfg, CLASSES, "vqa")
    assert model.image_token_id == base.config.image_token_id
    torch.testing.assert_close(model.pixel_mean.flatten(), torch.tensor(mean))
    # paper: only LoRA and the projector are trained, and only they are exported
    keys = model.checkpoint_state_dict_keys()
    assert keys == model.trainable_state_dict_keys()
    assert all("lora_" in k or "multi_modal_projector" in k for k in keys)
    assert not any("embed_tokens" in k or "lm_head" in k for k in keys)

    # LoRA starts at zero: the wrapped model computes what the saved one does
    pixels = colour_images()[:2]
    input_ids, attention = model.encode_prompts(QUESTIONS[:2])
    with torch.no_grad():
        ref = base(input_ids=input_ids, attention_mask=attention, pixel_values=model.pixel_values(pixels)).logits[:, -1]
    torch.testing.assert_close(model.classify_forward(pixels, QUESTIONS[:2]), ref, atol=1e-5, rtol=1e-4)
    assert torch.isfinite(model.loss(pixels, QUESTIONS[:2], EXPLANATIONS[:2], LABELS[:2]))
    assert len(model.generate(pixels, QUESTIONS[:2], max_new_tokens=3)) == 2


def test_paper_profile_missing_folder(tmp_path):
    missing = tmp_path / "no-such-llava"
    with pytest.raises(FileNotFoundError, match="no-such-llava"):
        LlavaBaseline(MLLMConfig(profile="paper", model_path=str(missing)), CLASSES, "vqa")
    with pytest.raises(ConfigError, match="model_path"):
        LlavaBaseline(MLLMConfig(profile="paper"), CLASSES, "vqa")


def test_config_and_argument_validation():
    # checked where the model is built (params.yaml blocks are checked on load, with their key path)
    with pytest.raises(ConfigError, match="vision_image_size"):
        MLLMConfig(vision_image_size=60, vision_patch=8).validate("mllm")
    with pytest.raises(ConfigError, match="lora_targets"):
        LlavaBaseline(MLLMConfig(lora_targets=["fc1"]), CLASSES, "vqa", texts=TEXTS)
    assert MLLMConfig(lora_targets=["q_proj", "v_proj"]).lora_targets == ("q_proj", "v_proj")
    assert MLLMConfig().trains_embeddings and not MLLMConfig(profile="paper", model_path="x").trains_embeddings
    with pytest.raises(ValueError, match="mode"):
        LlavaBaseline(MLLMConfig(), CLASSES, "rank", texts=TEXTS)
    with pytest.raises(ValueError, match="distinct"):
        LlavaBaseline(MLLMConfig(), ["Red fox", "the red fox"], "vqa", texts=TEXTS)
