"""SDTG text head and its tokenizer, on tiny random-init models (no downloads)."""

import dataclasses

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from megl.config import ConfigError
from megl.models.sdtg import SDTGHead, TextHeadConfig
from megl.models.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

EXPLANATIONS = [
    "the dog has floppy ears and a wet nose.",
    "a cat with long whiskers sits on the mat.",
    "the person is riding a bicycle, both wheels visible.",
]
CORPUS = EXPLANATIONS + [
    "a red bird sits on a branch.",
    "the zebra has black and white stripes!",
    "two people are playing tennis (outdoors).",
]
FEATURE_DIM = 16

# peft 0.21 calls a transformers 5 API that is deprecated for v6; harmless here.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=160)


def make_head(tok, seed=0, **overrides):
    torch.manual_seed(seed)
    return SDTGHead(TextHeadConfig(**overrides), FEATURE_DIM, tok)


def make_batch(n=4, seed=1, size=32):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g)
    cam = torch.rand(n, 4, 4, generator=g)
    features = torch.randn(n, FEATURE_DIM, 4, 4, generator=g)
    return images, cam, features


# ----------------------------------------------------------------- tokenizer


def test_tokenizer_deterministic_and_special_tokens(tok):
    again = train_tokenizer(CORPUS, vocab_size=160)
    assert again.get_vocab() == tok.get_vocab()
    assert again.backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    assert (tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token) == ("<pad>", "<bos>", "<eos>", "<unk>")
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id}) == 4


def test_tokenizer_round_trip_and_save_load(tok, tmp_path):
    sentence = "The dog has floppy ears, and a wet nose!"
    ids = tok(sentence, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in ids
    assert len(ids) < len(sentence) / 2  # word-level tokens, not characters
    assert tok.decode(ids) == sentence.lower()

    save_tokenizer(tok, tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert loaded.get_vocab() == tok.get_vocab()
    assert loaded(sentence, add_special_tokens=False)["input_ids"] == ids
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id, loaded.unk_token_id) == (
        tok.pad_token_id,
        tok.bos_token_id,
        tok.eos_token_id,
        tok.unk_token_id,
    )


# ----------------------------------------------------------------- head structure


def test_prefix_shape_and_trainability(tok):
    head = make_head(tok, prefix_grid=3)
    images, cam, features = make_batch(n=2)
    assert head.prefix(images, cam, features).shape == (2, 9, head.cfg.llm_hidden)

    head.train()
    assert not head.clip.training and all(not m.training for m in head.clip.modules())
    assert head.llm.training
    assert all(not p.requires_grad for p in head.clip.parameters())
    for lin in (head.W_I, head.W_A):
        assert all(p.requires_grad for p in lin.parameters())

    trainable = {n for n, p in head.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
    assert any("embed_tokens.modules_to_save" in n for n in trainable)
    assert any("lm_head.modules_to_save" in n for n in trainable)
    frozen_llm = [n for n, p in head.llm.named_parameters() if not p.requires_grad]
    assert any("q_proj.base_layer" in n for n in frozen_llm)  # base LLM weights frozen
    for n in trainable:
        assert n.startswith(("W_I.", "W_A.")) or "lora_" in n or "modules_to_save" in n, n

    head_frozen_emb = make_head(tok, train_embeddings=False)
    assert not any("modules_to_save" in n for n, p in head_frozen_emb.named_parameters() if p.requires_grad)


def test_encode_layout(tok):
    head = make_head(tok, max_text_tokens=6)
    ids, mask = head.encode(["a cat.", EXPLANATIONS[2]])
    assert ids.shape == mask.shape and ids.shape[1] == 6
    assert ids[:, 0].tolist() == [tok.bos_token_id] * 2
    assert ids[1, -1] == tok.eos_token_id  # truncated, still closed by <eos>
    n0 = int(mask[0].sum())
    assert ids[0, n0 - 1] == tok.eos_token_id and (ids[0, n0:] == tok.pad_token_id).all()


# ----------------------------------------------------------------- loss and gradients


def test_text_loss_reaches_cam(tok):
    head = make_head(tok)
    images, cam, features = make_batch()
    cam.requires_grad_()
    ids, mask = head.encode(EXPLANATIONS + EXPLANATIONS[:1])
    loss = head(images, cam, features, ids, mask)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert cam.grad is not None and cam.grad.abs().sum() > 0
    with torch.no_grad():
        zeroed = head(images, torch.zeros_like(cam), features, ids, mask)
    assert not torch.isclose(zeroed, loss.detach())


def test_overfit_then_generate_reproduces(tok):
    head = make_head(tok)
    images, cam, features = make_batch()
    targets = EXPLANATIONS + EXPLANATIONS[:1]
    ids, mask = head.encode(targets)
    opt = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=3e-3)
    head.train()
    first = None
    for _ in range(150):
        loss = head(images, cam, features, ids, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.5 * first

    head.eval()
    out = head.generate(images, cam, features)
    assert len(out) == 4 and all(isinstance(s, str) for s in out)
    assert any(o == t for o, t in zip(out, targets)), out
    assert head.generate(images, cam, features) == out  # deterministic


def test_generate_deterministic_and_batched(tok):
    head = make_head(tok, lora_dropout=0.1)
    head.train()  # generate switches dropout off by itself, and restores train mode
    images, cam, features = make_batch(n=3)
    a = head.generate(images, cam, features, max_new_tokens=5)
    b = head.generate(images, cam, features, max_new_tokens=5)
    assert a == b and len(a) == 3 and all(isinstance(s, str) for s in a)
    assert head.training and not head.clip.training


@pytest.mark.parametrize("word_region_attention", [False, True])
def test_trainable_state_dict_round_trip(tok, tmp_path, word_region_attention):
    from safetensors.torch import load_file, save_file

    make = lambda: make_head(tok, word_region_attention=word_region_attention)  # noqa: E731
    head = make()
    images, cam, features = make_batch()
    ids, mask = head.encode(EXPLANATIONS + EXPLANATIONS[:1])
    opt = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(3):
        opt.zero_grad()
        head(images, cam, features, ids, mask).backward()
        opt.step()
    head.eval()
    sd = head.trainable_state_dict()
    assert sd and all(head.get_parameter(n).requires_grad for n in sd)
    save_file(sd, str(tmp_path / "head.safetensors"))

    assert any(n.startswith("word_region.") for n in sd) == word_region_attention
    fresh = make().eval()  # same seed: identical frozen weights
    with torch.no_grad():
        assert not torch.equal(fresh(images, cam, features, ids, mask), head(images, cam, features, ids, mask))
        fresh.load_trainable_state_dict(load_file(str(tmp_path / "head.safetensors")))
        assert torch.equal(fresh(images, cam, features, ids, mask), head(images, cam, features, ids, mask))
    with pytest.raises(KeyError):
        fresh.load_trainable_state_dict({k: v for k, v in sd.items() if not k.startswith("W_I")})


# ----------------------------------------------------------------- word-region attention (REX)


def test_word_region_attention_starts_as_the_plain_head(tok):
    """Its output projection starts at zero and it is built last: an untrained head with it gives
    the plain head's loss and explanations (same seed)."""
    plain, wra = make_head(tok).eval(), make_head(tok, word_region_attention=True).eval()
    images, cam, features = make_batch()
    ids, mask = plain.encode(EXPLANATIONS + EXPLANATIONS[:1])
    with torch.no_grad():
        assert torch.allclose(wra(images, cam, features, ids, mask), plain(images, cam, features, ids, mask), atol=1e-6)
    assert wra.generate(images, cam, features, max_new_tokens=6) == plain.generate(images, cam, features, max_new_tokens=6)
    trainable = {n for n, p in wra.named_parameters() if p.requires_grad}
    assert {"word_region.q.weight", "word_region.cell", "word_region.o.weight"} <= trainable


def test_word_region_attention_trains_and_reaches_cam(tok):
    head = make_head(tok, word_region_attention=True)
    images, cam, features = make_batch()
    cam.requires_grad_()
    targets = EXPLANATIONS + EXPLANATIONS[:1]
    ids, mask = head.encode(targets)
    head(images, cam, features, ids, mask).backward()
    assert cam.grad is not None and cam.grad.abs().sum() > 0

    opt = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=3e-3)
    head.train()
    for _ in range(150):
        loss = head(images, cam.detach(), features, ids, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert head.word_region.o.weight.abs().sum() > 0  # the layer took part
    head.eval()
    out = head.generate(images, cam.detach(), features)
    assert any(o == t for o, t in zip(out, targets)), out
    assert head.generate(images, cam.detach(), features) == out

    weights = head.word_regions(images, cam.detach(), features, targets)
    assert weights.shape == (4, ids.shape[1], head.cfg.prefix_grid ** 2)
    assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[:2]))
    with pytest.raises(ValueError, match="word_region_attention is off"):
        make_head(tok).word_regions(images, cam.detach(), features, targets)


# ----------------------------------------------------------------- paper profile


def test_paper_profile_missing_path(tok, tmp_path):
    with pytest.raises(ConfigError, match="text_head.clip_path: the 'paper' profile needs a local checkpoint"):
        TextHeadConfig(profile="paper")
    with pytest.raises(FileNotFoundError, match="clip_path"):
        SDTGHead(TextHeadConfig(profile="paper", clip_path=str(tmp_path / "nope"), llm_path=str(tmp_path)), FEATURE_DIM, tok)


def test_paper_profile_loads_local_checkpoints(tok, tmp_path):
    torch.manual_seed(0)
    clip = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=48, patch_size=8
        )
    )
    llm = LlamaForCausalLM(  # vocab differs from the tokenizer: the head must resize it
        LlamaConfig(
            vocab_size=100, hidden_size=48, intermediate_size=96, num_hidden_layers=1, num_attention_heads=2
        )
    )
    clip.save_pretrained(tmp_path / "clip")
    llm.save_pretrained(tmp_path / "llm")
    cfg = TextHeadConfig(profile="paper", clip_path=str(tmp_path / "clip"), llm_path=str(tmp_path / "llm"))

    with pytest.raises(ConfigError, match="llm_path"):
        TextHeadConfig(profile="paper", clip_path=cfg.clip_path)
    with pytest.raises(FileNotFoundError, match="llm_path"):
        SDTGHead(TextHeadConfig(profile="paper", clip_path=cfg.clip_path, llm_path=str(tmp_path / "nope")), FEATURE_DIM, tok)

    head = SDTGHead(cfg, FEATURE_DIM, tok)
    assert head.llm.get_input_embeddings().weight.shape == (len(tok), 48)
    images, cam, features = make_batch(n=2)
    cam.requires_grad_()
    assert head.prefix(images, cam, features).shape == (2, 4, 48)
    ids, mask = head.encode(EXPLANATIONS[:2])
    loss = head(images, cam, features, ids, mask)
    loss.backward()
    assert torch.isfinite(loss) and cam.grad.abs().sum() > 0
    assert len(head.generate(images, cam, features, max_new_tokens=3)) == 2


# ----------------------------------------------------------------- pretrained profile (tokenizer choice)

CHAT = ("{% for m in messages %}<bos>{{ m['role'] }}: {{ m['content'] }}<eos>{% endfor %}"
        "{% if add_generation_prompt %}<bos>assistant: {% endif %}")


def _local_llm(tmp_path, tok, chat_template=None):
    torch.manual_seed(0)
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=96,
                                       num_hidden_layers=1, num_attention_heads=2))
    llm.save_pretrained(tmp_path / "llm")
    tok.chat_template = chat_template
    tok.save_pretrained(tmp_path / "llm")
    tok.chat_template = None
    return str(tmp_path / "llm")


@pytest.mark.parametrize("chat", [True, False])
def test_pretrained_llm_keeps_its_tokenizer_and_embeddings(tok, tmp_path, chat):
    from megl.models.tokenizer import head_tokenizer

    path = _local_llm(tmp_path, tok, CHAT if chat else None)
    cfg = TextHeadConfig(profile="pretrained", llm_path=path, prompt="why?")
    own = head_tokenizer(cfg.llm_path, ["other texts would train another vocabulary"], vocab_size=50)
    assert own.get_vocab() == tok.get_vocab()  # the LLM's tokenizer, not a new one
    head = SDTGHead(cfg, FEATURE_DIM, own)
    if chat:  # the user turn holds the prefix, then the prompt; the answer follows the template
        ids = lambda text: own(text, add_special_tokens=False)["input_ids"]  # noqa: E731
        assert head.before_ids == ids("<bos>user: ")
        assert head.after_ids == ids("\nwhy?<eos><bos>assistant: ")
    else:  # no chat template: <bos>, the prefix, the explanation
        assert (head.before_ids, head.after_ids) == ([own.bos_token_id], [])
    assert not any(p.requires_grad for n, p in head.named_parameters() if "embed_tokens" in n or "lm_head" in n)
    images, cam, features = make_batch(n=2)
    ids, mask = head.encode(EXPLANATIONS[:2])
    assert ids[:, : len(head.after_ids)].tolist() == [head.after_ids] * 2
    loss = head(images, cam.requires_grad_(), features, ids, mask)
    loss.backward()
    assert torch.isfinite(loss) and cam.grad.abs().sum() > 0
    assert len(head.generate(images, cam.detach(), features, max_new_tokens=3)) == 2

    # word-region attention on a loaded LLM, behind its prompt: untrained, the same loss and text
    heads = []
    for wra in (False, True):
        torch.manual_seed(0)
        heads.append(SDTGHead(dataclasses.replace(cfg, word_region_attention=wra), FEATURE_DIM, own).eval())
    with torch.no_grad():
        losses = [h(images, cam.detach(), features, ids, mask) for h in heads]
    assert torch.allclose(*losses, atol=1e-6)
    assert heads[0].generate(images, cam.detach(), features, max_new_tokens=4) == \
        heads[1].generate(images, cam.detach(), features, max_new_tokens=4)


def test_tiny_profile_refuses_local_paths():
    with pytest.raises(ConfigError, match="text_head.llm_path: set, but profile is 'tiny'"):
        TextHeadConfig(llm_path="/somewhere")
    with pytest.raises(ConfigError, match="text_head.llm_path: the 'pretrained' profile needs a local checkpoint"):
        TextHeadConfig(profile="pretrained")


# ----------------------------------------------------------------- the encoder of I ⊙ Â, and what is exported


def _exported(head):
    return {k: v.clone() for k, v in head.state_dict().items() if k not in head.checkpoint_keys()}


def _same_after_reload(cfg, tok, head):
    """A rebuild under another seed, given the exported state, computes what `head` does."""
    again = make_head(tok, seed=123, **dataclasses.asdict(cfg))
    missing, unexpected = again.load_state_dict(_exported(head), strict=False)
    assert not unexpected and set(missing) <= head.checkpoint_keys()
    images, cam, features = make_batch(n=2)
    ids, mask = head.encode(EXPLANATIONS[:2])
    with torch.no_grad():
        return torch.equal(head.eval()(images, cam, features, ids, mask), again.eval()(images, cam, features, ids, mask))


def test_a_dinov2_folder_encodes_the_masked_image(tok, tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    from megl.models.backbones import IMAGENET_MEAN

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=48,
                             patch_size=7, image_size=518)).save_pretrained(tmp_path / "dinov2")
    cfg = TextHeadConfig(encoder_path=str(tmp_path / "dinov2"), encoder_image_size=28)  # the tiny LLM, any profile
    head = make_head(tok, **dataclasses.asdict(cfg))
    assert type(head.clip).__name__ == "Dinov2Model" and head.clip_image_size == 28
    assert torch.allclose(head.clip_mean.flatten(), torch.tensor(IMAGENET_MEAN))
    images, cam, features = make_batch(n=2)
    ids, mask = head.encode(EXPLANATIONS[:2])
    loss = head(images, cam.requires_grad_(), features, ids, mask)
    loss.backward()
    assert torch.isfinite(loss) and cam.grad.abs().sum() > 0  # L_textual reaches Â through the frozen encoder
    assert not any(p.requires_grad for p in head.clip.parameters())
    # the encoder comes from its folder on load (never exported); the random-init LLM is exported
    keys = head.checkpoint_keys()
    assert keys and all(k.startswith("clip.") for k in keys) and {k for k in head.state_dict() if k.startswith("clip.")} == keys
    assert _same_after_reload(cfg, tok, head)

    with pytest.raises(ConfigError, match="encoder_path: set beside clip_path"):
        TextHeadConfig(profile="paper", clip_path="/a", llm_path="/b", encoder_path="/c")
    (tmp_path / "llm").mkdir()
    LlamaConfig(vocab_size=10).save_pretrained(tmp_path / "llm")
    with pytest.raises(ValueError, match="holds a 'llama' model"):
        make_head(tok, encoder_path=str(tmp_path / "llm"))


def test_the_random_encoder_of_a_pretrained_head_is_exported(tok, tmp_path):
    """The pretrained profile without clip_path keeps the tiny random-init CLIP, frozen: a rebuild draws
    it afresh, so the export must carry it (it once did not: the rebuild met training's encoder only
    while it drew random numbers in training's order)."""
    cfg = TextHeadConfig(profile="pretrained", llm_path=_local_llm(tmp_path, tok))
    head = make_head(tok, **dataclasses.asdict(cfg))
    keys = head.checkpoint_keys()
    assert keys and all(k.startswith("llm.") for k in keys)
    assert not any(k.startswith("clip.") for k in keys)
    assert _same_after_reload(cfg, tok, head)
