"""MLLM baselines of the MEGL paper: LLaVA-1.5 fine-tuned for classification, as VQA or as CoT.

Two ways of fine-tuning one multimodal LLM (a CLIP vision tower, a two-layer MLP projector and a
Llama LM, transformers' `LlavaForConditionalGeneration`) to classify an image:

- mode "vqa" — LLaVA-1.5's classification-as-VQA (Liu et al., "Improved Baselines with Visual
  Instruction Tuning", 2023; `haotian-liu/LLaVA`). Prompt in the Hugging Face port's form
  (`llava-hf`, `"USER: <image>\\n{prompt}\\nASSISTANT:"`) with LLaVA-1.5's short-answer instruction
  for closed-set answers:
      "USER: <image>\\n{question}\\nAnswer the question using a single word or phrase.\\nASSISTANT:"
  target " {class name}</s>".
- mode "cot" — Fine-tune-CoT (Ho et al., "Large Language Models Are Reasoning Teachers", ACL 2023;
  `itsnamgyu/reasoning-teacher`, src/data/format.py): rationale first, then the answer. Their
  prompt "{question} ###" and target " {rationale} --> {answer}" are put in the LLaVA chat frame:
      "USER: <image>\\n{question} ###\\nASSISTANT:"
  target " {explanation} --> {class name}</s>". In megl the human textual explanation is the
  rationale (there is no teacher model to sample one from).

The loss is the mean NLL of the target tokens only (`</s>` included); prompt, image and padding
positions are labelled −100, as in LLaVA's own `preprocess`. The vision tower is frozen (as in
LLaVA-1.5), the projector is trained fully, and the LM through LoRA on all its linear layers
(LLaVA's task-LoRA recipe: r 128, alpha 256).

Scoring is greedy generation followed by normalised exact match of the answer (for "cot": the text
after the last "-->") against the class names — not likelihood ranking of the class names. Why:
it is how LLaVA-1.5 scores its closed-set VQA benchmarks and how Fine-tune-CoT reads its
answers, and for CoT ranking would need a rationale to condition on, i.e. generation anyway. A
generation that names no class counts as wrong (class −1), which is part of what the baseline is
measured on.

Profiles:
- "tiny": a random-init small LLaVA built from config, with our own deterministic word-level BPE
  tokenizer (megl.models.tokenizer) plus an `<image>` special token. Random weights have nothing
  to adapt, so the token embeddings and lm_head are trainable too (peft `modules_to_save`).
- "paper": LLaVA-1.5 (e.g. a local copy of `llava-hf/llava-1.5-7b-hf`) and its own tokenizer,
  loaded from `model_path` with local_files_only (nothing is ever downloaded).

Images arrive as (B, 3, H, W) floats in [0, 1]; this module resizes them to the vision tower's
size and applies the CLIP normalisation itself. Nothing is seeded here; the caller seeds torch.
"""

from __future__ import annotations

import json
import re
import string
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import (
    AutoTokenizer,
    CLIPVisionConfig,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from megl.config import MLLMConfig
from megl.models.contract import NO_CLASS, Predictions, StepOutput, gallery_samples
from megl.models.tokenizer import train_tokenizer

IMAGE_TOKEN = "<image>"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
COT_SEPARATOR = "-->"
MODES = ("vqa", "cot")

VQA_PROMPT = "USER: <image>\n{question}\nAnswer the question using a single word or phrase.\nASSISTANT:"
COT_PROMPT = "USER: <image>\n{question} ###\nASSISTANT:"
VQA_TARGET = " {answer}"
COT_TARGET = " {explanation} --> {answer}"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------------------- answers


_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = frozenset({"a", "an", "the"})


def normalise_answer(text: str) -> str:
    """Lower-case, punctuation to spaces, drop the articles a/an/the, collapse whitespace.

    Punctuation becomes a space (not nothing) so that "t-shirt" and "t shirt", or "riding_horse"
    and "riding horse", meet; class names go through the same function, so the choice is symmetric.
    """
    words = _PUNCT.sub(" ", text.lower()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def split_cot(text: str) -> tuple[str, str]:
    """(explanation, answer) of a Fine-tune-CoT generation, split at the LAST "-->" (an explanation
    may itself contain an arrow; the answer never does). Without a separator the whole text is the
    explanation and the answer is "" (the model never committed to an answer)."""
    if COT_SEPARATOR not in text:
        return text.strip(), ""
    explanation, answer = text.rsplit(COT_SEPARATOR, 1)
    return explanation.strip(), answer.strip()


def parse_answer(text: str, classes: list[str], mode: str) -> int:
    """Index of the class whose normalised name equals the normalised answer, else −1.

    vqa: the answer is the whole generation; cot: the text after the last "-->" (none: −1)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "cot":
        if COT_SEPARATOR not in text:
            return -1
        text = split_cot(text)[1]
    answer = normalise_answer(text)
    if not answer:
        return -1
    for i, name in enumerate(classes):
        if normalise_answer(name) == answer:
            return i
    return -1


# ---------------------------------------------------------------------------- model


def _check_folder(path: str | None) -> Path:
    if path is None:
        raise FileNotFoundError("MLLMConfig.model_path is None: the 'paper' profile needs a local LLaVA-1.5 folder")
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"MLLMConfig.model_path = {str(path)!r} is not a folder: the 'paper' profile loads LLaVA-1.5 "
            "from a local copy (e.g. of llava-hf/llava-1.5-7b-hf); nothing is downloaded"
        )
    return folder


def _tokenizer_texts(classes: list[str], texts: list[str]) -> list[str]:
    """The tokenizer's training texts, in a fixed order (same inputs, same vocabulary).

    The templates lose their <image> placeholder (an added token, never split: BPE must not spend
    merges on "<", "image", ">"). BPE merges by frequency, so the template and the class names are
    repeated about as often as they occur in the training sequences (every prompt holds the
    template, every target a class name); once each, a large corpus would leave "assistant" or
    "phrase" in characters and lengthen every sequence.
    """
    frame = [
        VQA_PROMPT.replace(IMAGE_TOKEN, "").format(question=""),
        COT_PROMPT.replace(IMAGE_TOKEN, "").format(question=""),
        COT_TARGET.format(explanation="", answer=""),
    ]
    n = max(1, len(texts))
    return frame * n + list(classes) * max(1, n // len(classes)) + list(texts)


def _tiny_model(cfg: MLLMConfig, tokenizer) -> LlavaForConditionalGeneration:
    vision = CLIPVisionConfig(
        hidden_size=cfg.vision_hidden,
        intermediate_size=4 * cfg.vision_hidden,
        num_hidden_layers=cfg.vision_layers,
        num_attention_heads=cfg.vision_heads,
        image_size=cfg.vision_image_size,
        patch_size=cfg.vision_patch,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.llm_hidden,
        intermediate_size=cfg.llm_intermediate,
        num_hidden_layers=cfg.llm_layers,
        num_attention_heads=cfg.llm_heads,
        num_key_value_heads=cfg.llm_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(cfg.vision_image_size // cfg.vision_patch) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    return LlavaForConditionalGeneration._from_config(
        config, attn_implementation=cfg.attn_implementation, dtype=_DTYPES[cfg.dtype]
    )


class LlavaBaseline(nn.Module):
    """LLaVA-1.5 fine-tuned for classification, as VQA (`mode="vqa"`) or Fine-tune-CoT (`"cot"`).

    `texts` (tiny profile, no `tokenizer` given): the questions and explanations the tokenizer is
    trained on, with the prompt templates and class names added here. `tokenizer`: reuse one (e.g.
    reloaded with megl.models.tokenizer.load_tokenizer); the paper profile defaults to the
    checkpoint's own. The `tokenizer` attribute is what the exporter saves (`save_pretrained`).
    """

    def __init__(
        self,
        cfg: MLLMConfig,
        classes: list[str],
        mode: str,
        texts: list[str] | None = None,
        tokenizer=None,
    ) -> None:
        super().__init__()
        cfg.validate("mllm")  # params checked it with its full key path; code-built configs are checked here
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        normalised = [normalise_answer(c) for c in classes]
        if len(classes) < 2 or "" in normalised or len(set(normalised)) != len(classes):
            raise ValueError(f"need >= 2 class names, distinct and non-empty after normalisation: {classes}")
        self.cfg, self.mode, self.classes = cfg, mode, list(classes)

        if cfg.profile == "tiny":
            if tokenizer is None:
                tokenizer = train_tokenizer(_tokenizer_texts(classes, texts or []), cfg.vocab_size)
            if IMAGE_TOKEN not in tokenizer.get_vocab():
                tokenizer.add_special_tokens({"extra_special_tokens": [IMAGE_TOKEN]})
            model = _tiny_model(cfg, tokenizer)
            mean, std = CLIP_MEAN, CLIP_STD
        else:
            folder = _check_folder(cfg.model_path)
            if tokenizer is None:
                tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            model = LlavaForConditionalGeneration.from_pretrained(
                str(folder),
                local_files_only=True,
                dtype=_DTYPES[cfg.dtype],  # explicit: transformers 5 defaults to the checkpoint's dtype
                attn_implementation=cfg.attn_implementation,
            )
            mean, std = _image_stats(folder)
        self.tokenizer = tokenizer
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if self.image_token_id != model.config.image_token_id:
            raise ValueError(
                f"tokenizer's {IMAGE_TOKEN} id {self.image_token_id} != model's image_token_id "
                f"{model.config.image_token_id}"
            )
        if len(tokenizer) > model.config.text_config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens, the model's LM only {model.config.text_config.vocab_size}"
            )
        # LLaVA's checkpoints and tokenizers do not all define a pad token; any id works since
        # padding is masked out of attention and labels.
        candidates = (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.eos_token_id)
        self.pad_id = next(i for i in candidates + (0,) if i is not None)
        self.bos_id, self.eos_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        if self.eos_id is None:
            raise ValueError("the tokenizer has no eos token: generation could not stop")

        vcfg = model.config.vision_config
        self.vision_image_size = vcfg.image_size
        strategy = model.config.vision_feature_select_strategy
        # "default" drops CLS, "full" keeps it: input_ids must hold exactly this many image tokens.
        self.num_image_tokens = (vcfg.image_size // vcfg.patch_size) ** 2 + (strategy == "full")

        if cfg.gradient_checkpointing:
            # non-reentrant: works with frozen embeddings without enable_input_require_grads
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lm_targets = "|".join(cfg.lora_targets)
        modules_to_save = ["multi_modal_projector"]
        if cfg.trains_embeddings:
            modules_to_save += ["embed_tokens", "lm_head"]
        lora = LoraConfig(
            task_type="CAUSAL_LM",
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            # A regex so that the CLIP tower's own q/k/v projections are left alone.
            target_modules=rf".*language_model\..*\.({lm_targets})",
            modules_to_save=modules_to_save,
        )
        self.model = get_peft_model(model, lora)
        self._vision_tower().requires_grad_(False)
        self._vision_tower().eval()
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ plumbing
    def _llava(self) -> LlavaForConditionalGeneration:
        return self.model.get_base_model()

    def _vision_tower(self) -> nn.Module:
        return self._llava().model.vision_tower

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def train(self, mode: bool = True) -> "LlavaBaseline":
        super().train(mode)
        self._vision_tower().eval()  # frozen: never let its dropout switch on
        return self

    def prompt(self, question: str) -> str:
        template = VQA_PROMPT if self.mode == "vqa" else COT_PROMPT
        return template.format(question=question.strip())

    def target(self, explanation: str, label: int) -> str:
        name = self.classes[int(label)]
        if self.mode == "vqa":
            return VQA_TARGET.format(answer=name)
        return COT_TARGET.format(explanation=" ".join(explanation.split()), answer=name)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _expand_image(self, ids: list[int]) -> list[int]:
        if ids.count(self.image_token_id) != 1:
            raise ValueError(
                f"a prompt must hold exactly one {IMAGE_TOKEN}, got {ids.count(self.image_token_id)} "
                f"(does a question contain {IMAGE_TOKEN}?)"
            )
        i = ids.index(self.image_token_id)
        return ids[:i] + [self.image_token_id] * self.num_image_tokens + ids[i + 1 :]

    def _prompt_ids(self, question: str) -> list[int]:
        bos = [] if self.bos_id is None else [self.bos_id]
        return bos + self._encode(self.prompt(question))

    def _answer_ids(self, question: str, target: str) -> list[int]:
        # The answer as it is tokenised after the prompt (what the model reads back while
        # decoding); only if the prompt/answer boundary merges into one token, the target alone.
        prompt = self._encode(self.prompt(question))
        joint = self._encode(self.prompt(question) + target)
        answer = joint[len(prompt) :] if joint[: len(prompt)] == prompt else self._encode(target)
        return answer + [self.eos_id]

    def pixel_values(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (B, 3, H, W) → CLIP-normalised pixels at the vision tower's size and dtype."""
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"pixels must be (B, 3, H, W), got {tuple(pixels.shape)}")
        x = pixels.to(self.device, torch.float32)
        s = self.vision_image_size
        if x.shape[-2:] != (s, s):
            # CLIPImageProcessor resizes bicubically; antialias matters when shrinking
            x = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        x = (x - self.pixel_mean) / self.pixel_std
        return x.to(self._vision_tower().dtype)

    def encode_train(
        self, questions: list[str], explanations: list[str], labels: torch.Tensor | list[int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded (input_ids, attention_mask, labels); labels are −100 except on the target
        tokens and the final eos. Right padding is fine for training: causal attention never looks
        ahead, so real tokens never see the pads and their RoPE positions start at 0."""
        labels = [int(x) for x in (labels.tolist() if torch.is_tensor(labels) else labels)]
        if not len(questions) == len(explanations) == len(labels):
            raise ValueError("questions, explanations and labels must have the same length")
        rows = []
        for q, e, y in zip(questions, explanations, labels):
            prompt = self._expand_image(self._prompt_ids(q))
            answer = self._answer_ids(q, self.target(e, y))
            rows.append((prompt + answer, [-100] * len(prompt) + answer))
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        target = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, (ids, lab) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            target[i, : len(ids)] = torch.tensor(lab)
        return input_ids.to(self.device), attention.to(self.device), target.to(self.device)

    def encode_prompts(self, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded (input_ids, attention_mask): generation appends on the right, so every
        sample's last prompt token must sit in the last column; transformers' generate derives
        the positions from the mask, so pads shift nothing."""
        rows = [self._expand_image(self._prompt_ids(q)) for q in questions]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, width - len(r) :] = torch.tensor(r)
            attention[i, width - len(r) :] = 1
        return input_ids.to(self.device), attention.to(self.device)

    # ------------------------------------------------------------------ the training loop's interface
    text_head = None  # no SDTG head: the loop's optimiser puts every trainable weight at text_lr

    def questions(self, batch: dict) -> list[str]:
        """The batch's questions, the config's default where the source has none (ACT-X, generic)."""
        return [q or self.cfg.default_question for q in batch["question"]]

    def forward(self, batch: dict) -> StepOutput:
        """One training step's loss on megl.data.dataset.collate's batch (megl.train's loop)."""
        loss = self.loss(batch["pixels"], self.questions(batch), batch["explanation"], batch["label"])
        return StepOutput(loss=loss, terms={"answer": loss}, logits=None, cam=None)

    def predict_batch(self, batch: dict) -> torch.Tensor:
        """Class ids (−1: the answer names no class) for the loop's validation accuracy."""
        ids, _ = self.predict(batch["pixels"], self.questions(batch))
        return torch.tensor(ids, device=batch["pixels"].device)

    # ------------------------------------------------------------------ API
    def loss(self, pixels: torch.Tensor, questions: list[str], explanations: list[str], labels: torch.Tensor) -> torch.Tensor:
        """Mean NLL of the target tokens (answer, or explanation + answer, and eos)."""
        input_ids, attention, target = self.encode_train(questions, explanations, labels)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention,
            pixel_values=self.pixel_values(pixels),
            labels=target,
            use_cache=False,
        )
        return out.loss

    @torch.no_grad()
    def generate(self, pixels: torch.Tensor, questions: list[str], max_new_tokens: int | None = None) -> list[str]:
        """Greedy decoding (deterministic), in eval mode (LoRA dropout off); text up to eos."""
        input_ids, attention = self.encode_prompts(questions)
        gen = GenerationConfig(
            do_sample=False,
            num_beams=1,
            max_new_tokens=self.cfg.max_new_tokens if max_new_tokens is None else max_new_tokens,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_id,
            bos_token_id=self.bos_id,
        )
        was_training = self.training
        self.eval()
        try:
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                pixel_values=self.pixel_values(pixels),
                generation_config=gen,
            )
        finally:
            self.train(was_training)
        texts = []
        for row in out[:, input_ids.shape[1] :].tolist():
            if self.eos_id in row:
                row = row[: row.index(self.eos_id)]
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts

    def predict(self, pixels: torch.Tensor, questions: list[str]) -> tuple[list[int], list[str]]:
        """Class ids parsed from the generations (−1: no class named) and, for cot, the generated
        explanations ("" for vqa)."""
        texts = self.generate(pixels, questions)
        ids = [parse_answer(t, self.classes, self.mode) for t in texts]
        explanations = [split_cot(t)[0] if self.mode == "cot" else "" for t in texts]
        return ids, explanations

    @torch.no_grad()
    def classify_forward(self, pixels: torch.Tensor, questions: list[str]) -> torch.Tensor:
        """One forward pass over the prompt with its image, no decoding: the unit the paper's
        Table 5 times (call it at batch 1). Returns the next-token logits (B, vocab)."""
        input_ids, attention = self.encode_prompts(questions)
        was_training = self.training
        self.eval()
        try:
            out = self.model(
                input_ids=input_ids,
                attention_mask=attention,
                pixel_values=self.pixel_values(pixels),
                use_cache=False,
                logits_to_keep=1,
            )
        finally:
            self.train(was_training)
        return out.logits[:, -1]

    # ------------------------------------------------------------------ checkpoint
    def trainable_state_dict_keys(self) -> list[str]:
        """Names of what training changes: LoRA, the projector copy, and (tiny) the embeddings."""
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone().contiguous() for n, p in self.named_parameters() if p.requires_grad}

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor]:
        """What an export must save to rebuild this model, ready for safetensors' save_file.

        paper: only the trained weights (the rest is reloaded from model_path). tiny: every
        parameter, since the frozen random-init tower and LM are reproducible from nothing else."""
        if self.cfg.profile == "paper":
            return self.trainable_state_dict()
        return {n: p.detach().clone().contiguous() for n, p in self.named_parameters()}

    def load_checkpoint_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        params = dict(self.named_parameters())
        expected = set(self.checkpoint_state_dict_keys())
        if set(sd) != expected:
            missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
            raise KeyError(f"checkpoint mismatch: missing={missing[:10]} unexpected={unexpected[:10]}")
        with torch.no_grad():
            for name, tensor in sd.items():
                params[name].copy_(tensor)

    def checkpoint_state_dict_keys(self) -> list[str]:
        if self.cfg.profile == "paper":
            return self.trainable_state_dict_keys()
        return [n for n, _ in self.named_parameters()]

    # ------------------------------------------------------------------ the model contract (megl.models.contract)
    has_cam = False  # no saliency map: no localisation or faithfulness number is made up
    lower_hypotheses = True  # the tiny tokenizer lower-cases, a real LLaVA's does not
    text_head = None

    def param_groups(self, lr: float, text_lr: float) -> list[dict]:
        """A language model fine-tuned as a whole: at the language models' text_lr."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": text_lr}]

    def export_weights(self) -> dict[str, torch.Tensor]:
        """What rebuilds it (paper: LoRA + projector over model_path)."""
        return {k: v.cpu() for k, v in self.checkpoint_state_dict().items()}

    def load_weights(self, weights: dict[str, torch.Tensor]) -> None:
        try:
            self.load_checkpoint_state_dict(weights)
        except KeyError as exc:
            raise ValueError(str(exc)) from None

    def gallery(self, val_set, n: int, device) -> tuple[None, dict[str, list]]:
        """Generated answers against the references for the gallery's samples (no CAM: no image)."""
        from megl.data.dataset import collate

        picks, items, pixels = gallery_samples(val_set, n, device)
        self.eval()
        ids, generated = self.predict(pixels, self.questions(collate(items)))
        return None, {
            "sample": [val_set.manifest["sample_id"].iat[it["row"]] for it in items],
            "label": [val_set.classes[it["label"]] for it in items],
            "predicted": [val_set.classes[i] if i >= 0 else NO_CLASS for i in ids],
            "references": [" | ".join(val_set.explanations(i)) for i in picks],
            "generated": generated,
        }

    def predict_split(self, test_set, batch_size: int, device, explainer=None, text: bool = True) -> Predictions:
        """Classes parsed from greedy generations; Fine-tune-CoT's explanations (cot mode)."""
        from torch.utils.data import DataLoader

        from megl.data.dataset import collate
        from megl.progress import progress

        rows, labels, preds, generated = [], [], [], []
        loader = DataLoader(test_set, batch_size=batch_size, collate_fn=collate)
        for batch in progress(loader, len(loader), f"predict {len(test_set)} images (greedy answers)", unit="batch"):
            ids, explanations = self.predict(batch["pixels"].to(device), self.questions(batch))
            rows += batch["row"].tolist()
            labels += batch["label"].tolist()
            preds += ids
            generated += explanations
        preds_np = np.array(preds)
        return Predictions(np.array(rows), np.array(labels), preds_np, generated if self.mode == "cot" and text else None,
                           unparsed=int((preds_np < 0).sum()))

    def describe(self, config: dict, num_classes: int) -> dict:
        mllm = config["variant_terms"].get("mllm") or {}
        return {"model_family": "llava", "mllm_profile": mllm.get("profile", "tiny"), "num_classes": num_classes}

    def timed_calls(self, batch: dict):
        """Table 5's two calls at batch 1: one forward of the prompt with the image, no decoding
        (the paper's protocol), and the full greedy answer (with its explanation for CoT)."""
        image, question = batch["pixels"].to(self.device), self.questions(batch)
        return (lambda: self.classify_forward(image, question)), (lambda: self.generate(image, question))

    def size(self) -> tuple[int, int, torch.dtype]:
        # peft keeps the original of each module it trains a copy of (modules_to_save): count the model once
        total = sum(p.numel() for n, p in self.named_parameters() if ".original_module." not in n)
        return total, total, next(self.parameters()).dtype


def _image_stats(folder: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The checkpoint's image mean/std (preprocessor_config.json), CLIP's when it has none.
    Read as JSON so no image-processor class (and its optional dependencies) is needed."""
    path = folder / "preprocessor_config.json"
    if path.is_file():
        raw = json.loads(path.read_text())
        if "image_mean" in raw and "image_std" in raw:
            return tuple(raw["image_mean"]), tuple(raw["image_std"])
    return CLIP_MEAN, CLIP_STD
