"""SDTG text head: Saliency-Driven Textual Grounding (paper §3.3).

V_I = W_I · pool(f(I)_feature),  V_A = W_A · pool(CLIP(I ⊙ Â)),  V = V_A + V_I
(CLIP: the paper's; `text_head.encoder_path` puts another frozen encoder there, DINOv2)
is a prefix of prefix_grid² embeddings for a causal LM (LoRA via peft), and
L_textual is the mean NLL of the ground-truth explanation tokens given V.

Why some choices:
- The prefix keeps a prefix_grid × prefix_grid spatial grid (instead of one pooled
  vector) so the LM can tell *where* the saliency mass lies.
- Â enters only through `images * cam` and the frozen CLIP is differentiable w.r.t. its
  input, so ∂L_textual/∂Â exists: this is the paper's "textual supervision on visual
  explanations" (§3.4.1). Nothing here detaches the cam.
- The tiny LLM's tokenizer is new (trained on the explanations), so its embedding and output
  layers are re-learnt: peft `modules_to_save` (trainable copies). A pretrained LLM keeps its own
  tokenizer, embeddings and chat conventions: the prefix sits in its user turn, before the
  instruction, and the explanation is the assistant's answer (`prompt_ids`).
- Nothing is seeded here; the caller seeds torch before building the head.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import (AutoConfig, AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel, Dinov2Model, LlamaConfig,
                          LlamaForCausalLM)

from megl.config import TextHeadConfig
from megl.models.backbones import IMAGENET_MEAN, IMAGENET_STD, pixel_stats
from megl.models.word_region_attention import WordRegionAttention

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Eager attention everywhere: it is deterministic on CPU/GPU and has a double backward,
# which the Grad-CAM `create_graph` mode may need when gradients cross this head.
ATTN = "eager"


def _local_path(cfg: TextHeadConfig, field: str) -> str:
    path = getattr(cfg, field)
    if path is None:
        raise FileNotFoundError(
            f"TextHeadConfig.{field} is None: the 'paper' profile needs a local checkpoint "
            "folder (nothing is downloaded)"
        )
    if not Path(path).exists():
        raise FileNotFoundError(f"TextHeadConfig.{field} = {str(path)!r} does not exist")
    return str(path)


# model_type (a checkpoint's config.json) -> the transformers encoder the head loads for I ⊙ Â
ENCODERS = {"clip": CLIPVisionModel, "clip_vision_model": CLIPVisionModel, "dinov2": Dinov2Model}


@dataclasses.dataclass
class Encoder:
    """The frozen encoder of I ⊙ Â and how it is fed."""

    model: nn.Module
    image_size: int  # the side I ⊙ Â is resized to
    mean: tuple[float, ...]
    std: tuple[float, ...]
    loaded: bool  # from a local checkpoint (rebuilt from it on load, so never exported)
    kwargs: dict  # extra forward arguments


def _build_encoder(cfg: TextHeadConfig, kw: dict) -> Encoder:
    field = "encoder_path" if cfg.encoder_path is not None else "clip_path"
    if getattr(cfg, field) is None:
        clip = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=cfg.clip_hidden,
                intermediate_size=4 * cfg.clip_hidden,
                num_hidden_layers=cfg.clip_layers,
                num_attention_heads=cfg.clip_heads,
                image_size=cfg.clip_image_size,
                patch_size=cfg.clip_patch,
                attn_implementation=ATTN,
            )
        )
        return Encoder(clip, cfg.clip_image_size, CLIP_MEAN, CLIP_STD, loaded=False, kwargs={})
    folder = _local_path(cfg, field)
    model_type = AutoConfig.from_pretrained(folder, local_files_only=True).model_type
    if model_type not in ENCODERS:
        raise ValueError(f"text_head.{field}: {folder} holds a {model_type!r} model; the head encodes I ⊙ Â with "
                         f"one of {sorted(ENCODERS)} (transformers model_type)")
    model = ENCODERS[model_type].from_pretrained(folder, **kw)
    native = model.config.image_size
    side = cfg.encoder_image_size or native
    # DINOv2 always interpolates its position embeddings; CLIP does when asked
    kwargs = {"interpolate_pos_encoding": True} if side != native and model_type != "dinov2" else {}
    family = (IMAGENET_MEAN, IMAGENET_STD) if model_type == "dinov2" else (CLIP_MEAN, CLIP_STD)
    return Encoder(model, side, *pixel_stats(folder, family), loaded=True, kwargs=kwargs)


def _build_backbones(cfg: TextHeadConfig, vocab: int) -> tuple[Encoder, LlamaForCausalLM]:
    # float32 explicitly: transformers 5 defaults to dtype="auto" (a bf16 checkpoint would
    # load in bf16 and clash with the fp32 projections and the fp32 Grad-CAM).
    kw = dict(local_files_only=True, attn_implementation=ATTN, dtype=torch.float32)
    encoder = _build_encoder(cfg, kw)
    if cfg.llm_path is not None:
        llm = AutoModelForCausalLM.from_pretrained(_local_path(cfg, "llm_path"), **kw)
        if vocab > llm.get_input_embeddings().num_embeddings:  # a tokenizer with added tokens
            llm.resize_token_embeddings(vocab)
    else:
        llm = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=vocab,
                hidden_size=cfg.llm_hidden,
                intermediate_size=cfg.llm_intermediate,
                num_hidden_layers=cfg.llm_layers,
                num_attention_heads=cfg.llm_heads,
                num_key_value_heads=cfg.llm_heads,
                max_position_embeddings=max(64, cfg.prefix_grid**2 + cfg.max_text_tokens),
                tie_word_embeddings=False,
                attn_implementation=ATTN,
            )
        )
    return encoder, llm


IMAGE_MARK = "<megl-image-prefix>"


def prompt_ids(cfg: TextHeadConfig, tokenizer) -> tuple[list[int], list[int]]:
    """The token ids before the image prefix and between it and the explanation.

    Tiny LLM: nothing, then <bos>. A chat-tuned LLM: its chat template for one user turn holding
    the prefix and `cfg.prompt`, up to the assistant's answer. Another pretrained LLM: <bos> (if
    it has one) before the prefix."""
    if cfg.llm_path is None:
        return [], [tokenizer.bos_token_id]
    if getattr(tokenizer, "chat_template", None):
        turn = [{"role": "user", "content": f"{IMAGE_MARK}\n{cfg.prompt}"}]
        text = tokenizer.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        before, after = text.split(IMAGE_MARK)
        return (tokenizer(before, add_special_tokens=False)["input_ids"],
                tokenizer(after, add_special_tokens=False)["input_ids"])
    return ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []), []


class SDTGHead(nn.Module):
    def __init__(self, cfg: TextHeadConfig, feature_dim: int, tokenizer) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        encoder, llm = _build_backbones(cfg, len(tokenizer))
        if cfg.llm_path is None:
            for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
                setattr(llm.config, name, getattr(tokenizer, name))
        if tokenizer.eos_token_id is None:
            raise ValueError(f"text_head: the tokenizer of {cfg.llm_path} has no eos token to end an explanation")
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.before_ids, self.after_ids = prompt_ids(cfg, tokenizer)

        encoder.model.requires_grad_(False)
        self.clip = encoder.model.eval()  # `clip` whichever encoder it is: the exported weights' names
        self.clip_image_size = encoder.image_size
        self.encoder_loaded, self.encoder_kwargs = encoder.loaded, encoder.kwargs
        lora = LoraConfig(
            task_type="CAUSAL_LM",
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=list(cfg.lora_targets),
            modules_to_save=["embed_tokens", "lm_head"] if cfg.relearn_embeddings else None,
        )
        self.llm = get_peft_model(llm, lora)

        llm_hidden = llm.config.hidden_size
        self.W_I = nn.Linear(feature_dim, llm_hidden)
        self.W_A = nn.Linear(encoder.model.config.hidden_size, llm_hidden)
        # Built last and only when asked, so the plain head's initialisation is unchanged.
        self.word_region = WordRegionAttention(llm_hidden, cfg.prefix_grid) if cfg.word_region_attention else None
        # Non-persistent: constants, not part of any checkpoint.
        self.register_buffer("clip_mean", torch.tensor(encoder.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(encoder.std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> "SDTGHead":
        super().train(mode)
        self.clip.eval()  # frozen encoder: never let dropout/etc. switch on
        return self

    # ------------------------------------------------------------------ prefix
    @staticmethod
    def _grid_tokens(x: torch.Tensor, grid: int) -> torch.Tensor:
        """(B, C, h, w) -> (B, grid*grid, C), row-major over the pooled grid."""
        return F.adaptive_avg_pool2d(x, grid).flatten(2).transpose(1, 2)

    def prefix(self, images: torch.Tensor, cam: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        g = self.cfg.prefix_grid
        v_i = self.W_I(self._grid_tokens(features, g))

        cam_up = F.interpolate(cam[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)
        masked = images * cam_up  # Î = I ⊙ Â: the path by which L_textual reaches Â
        s = self.clip_image_size
        if masked.shape[-2:] != (s, s):
            masked = F.interpolate(masked, size=(s, s), mode="bilinear", align_corners=False, antialias=False)
        pixels = (masked - self.clip_mean) / self.clip_std
        patches = self.clip(pixel_values=pixels.to(self.clip.dtype), **self.encoder_kwargs).last_hidden_state[:, 1:]  # drop CLS
        b, n, d = patches.shape
        side = math.isqrt(n)
        patch_grid = patches.transpose(1, 2).reshape(b, d, side, side)
        v_a = self.W_A(self._grid_tokens(patch_grid.to(self.W_A.weight.dtype), g))
        return v_a + v_i

    # ------------------------------------------------------------------ text
    def _embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        # With modules_to_save this is peft's wrapper, i.e. the trainable copy.
        return self.llm.get_input_embeddings()(input_ids)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """`after_ids text <eos>` right-padded (text cut to max_text_tokens - 2 tokens)."""
        tok = self.tokenizer
        body = tok(list(texts), add_special_tokens=False)["input_ids"]
        rows = [self.after_ids + ids[: self.cfg.max_text_tokens - 2] + [self.eos_id] for ids in body]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r)
            attention_mask[i, : len(r)] = 1
        device = self.W_I.weight.device
        return input_ids.to(device), attention_mask.to(device)

    def _with_prompt(self, prefix: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
        """[before_ids] + prefix + tail, embedded: one row per sample."""
        parts = [prefix.to(tail.dtype), tail]
        if self.before_ids:
            before = torch.tensor(self.before_ids, device=prefix.device)
            parts.insert(0, self._embed(before)[None].expand(prefix.shape[0], -1, -1))
        return torch.cat(parts, dim=1)

    def _sequence(self, prefix, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """The embedded prompt + prefix + tokens and its attention mask."""
        embeds = self._with_prompt(prefix, self._embed(input_ids))
        ones = torch.ones((embeds.shape[0], embeds.shape[1] - input_ids.shape[1]), dtype=attention_mask.dtype,
                          device=attention_mask.device)
        return embeds, torch.cat([ones, attention_mask], dim=1)

    def forward(self, images, cam, features, input_ids, attention_mask) -> torch.Tensor:
        prefix = self.prefix(images, cam, features)
        embeds, mask = self._sequence(prefix, input_ids, attention_mask)
        b, p = embeds.shape[0], embeds.shape[1] - input_ids.shape[1]
        # Predict the explanation and its <eos>; never the prompt, the prefix or pads.
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        labels[:, : len(self.after_ids)] = -100
        labels = torch.cat([torch.full((b, p), -100, dtype=labels.dtype, device=labels.device), labels], dim=1)
        if self.word_region is None:
            return self.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels, use_cache=False).loss
        hidden = self._decoder()(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
        logits = self.llm.get_output_embeddings()(self.word_region(hidden, prefix)[0])
        # the LM's own loss: next-token NLL, mean over the labelled tokens, in float32
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)

    def _decoder(self) -> nn.Module:
        """The causal LM without its output layer (LoRA inside): hidden states after the final norm."""
        return self.llm.get_base_model().get_decoder()

    @torch.no_grad()
    def word_regions(self, images, cam, features, texts: list[str]) -> torch.Tensor:
        """(B, T, prefix_grid²): each token's attention over the prefix grid's cells, row-major, for
        the tokens `encode(texts)` gives (needs text_head.word_region_attention)."""
        if self.word_region is None:
            raise ValueError("text_head.word_region_attention is off: this head has no word-region attention")
        prefix = self.prefix(images, cam, features)
        input_ids, attention_mask = self.encode(texts)
        embeds, mask = self._sequence(prefix, input_ids, attention_mask)
        hidden = self._decoder()(inputs_embeds=embeds, attention_mask=mask, use_cache=False).last_hidden_state
        return self.word_region(hidden[:, -input_ids.shape[1]:], prefix)[1]

    @torch.no_grad()
    def generate(self, images, cam, features, max_new_tokens: int | None = None) -> list[str]:
        """Greedy decoding after the prompt and prefix; stops per sample at <eos>.

        Every sample has the same prompt and prefix length and no left padding, so the batch needs
        no per-sample positions; finished samples keep decoding but their tokens are ignored.
        The head is put in eval mode meanwhile (LoRA dropout off) so decoding is deterministic.
        """
        tok = self.tokenizer
        max_new = self.cfg.max_text_tokens - 1 if max_new_tokens is None else max_new_tokens
        was_training = self.training
        self.eval()
        try:
            prefix = self.prefix(images, cam, features)
            b = prefix.shape[0]
            after = torch.tensor(self.after_ids, dtype=torch.long, device=prefix.device).expand(b, -1)
            embeds = self._with_prompt(prefix, self._embed(after))
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=prefix.device)
            done = torch.zeros(b, dtype=torch.bool, device=prefix.device)
            out_ids: list[torch.Tensor] = []
            past = None
            for _ in range(max_new):
                if self.word_region is None:
                    out = self.llm(inputs_embeds=embeds, attention_mask=mask, past_key_values=past, use_cache=True)
                    logits = out.logits[:, -1]
                else:
                    out = self._decoder()(inputs_embeds=embeds, attention_mask=mask, past_key_values=past, use_cache=True)
                    mixed = self.word_region(out.last_hidden_state[:, -1:], prefix)[0]
                    logits = self.llm.get_output_embeddings()(mixed)[:, -1]
                past = out.past_key_values
                nxt = logits.argmax(-1)
                nxt = nxt.masked_fill(done, self.pad_id)
                out_ids.append(nxt)
                done |= nxt == self.eos_id
                if bool(done.all()):
                    break
                embeds = self._embed(nxt[:, None])
                mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=mask.device)], dim=1)
        finally:
            self.train(was_training)
        texts = []
        for row in (torch.stack(out_ids, 1).tolist() if out_ids else [[] for _ in range(b)]):
            if self.eos_id in row:
                row = row[: row.index(self.eos_id)]
            texts.append(tok.decode(row, skip_special_tokens=True))
        return texts

    # ------------------------------------------------------------------ checkpoint
    def checkpoint_keys(self) -> set[str]:
        """The state a rebuild takes from the local checkpoint folders, so never exported: a loaded
        encoder's, a loaded LLM's frozen weights. Random-init parts, frozen or not, are exported
        (a rebuild would draw them afresh)."""
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k for k in self.state_dict() if (k.startswith("clip.") and self.encoder_loaded)
                or (k.startswith("llm.") and self.cfg.llm_path is not None and k not in trainable)}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what training changes (LoRA, W_I, W_A, re-learnt embeddings): contiguous
        unshared copies, ready for `safetensors.torch.save_file`."""
        return {n: p.detach().clone().contiguous() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        params = dict(self.named_parameters())
        expected = {n for n, p in params.items() if p.requires_grad}
        if set(sd) != expected:
            missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
            raise KeyError(f"trainable state mismatch: missing={missing} unexpected={unexpected}")
        with torch.no_grad():
            for name, tensor in sd.items():
                params[name].copy_(tensor)
