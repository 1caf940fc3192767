"""The params schema: every block of params.yaml as a frozen dataclass, and `load_params`.

Loading is strict (megl.typed_yaml): an unknown key, a missing key or a value of the wrong type is a
ConfigError that names the file and the dotted key path; each block's `validate` checks its values.
Paths are made absolute against the params file's folder. What the file alone cannot tell (the
folders the pipeline reads exist, every variant's method is in the registry and reads the keys it
sets) is checked by megl.pipeline_checks, in the validate stage.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml.error import YAMLError

from megl.typed_yaml import ConfigError, build_dataclass, read_yaml, validate_tree

__all__ = ["ConfigError", "build_dataclass", "read_yaml"]  # re-exported: what every stage catches

DEFAULT_PARAMS = Path("params.yaml")

@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """Stratified, seeded re-split shared by every dataset (and the synthetic decoy planting)."""

    seed: int
    val: float
    test: float

    def validate(self, where: str) -> None:
        for name in ("val", "test"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{where}.{name}: must be in [0, 1), got {value}")
        if self.val + self.test >= 1.0:
            raise ConfigError(f"{where}: val + test must leave room for train, got {self.val + self.test}")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """One synthetic benchmark written in a real raw layout (see megl.data.synthetic)."""

    kind: Literal["objects", "actions"]
    seed: int
    out_dir: str
    num_samples: int
    num_classes: int
    image_size: int
    map_size: int
    decoy_agreement: float
    visual_fraction: float
    distractors: int
    # the border decoy: grey (a grey level per class) or colour (a hue per class); side as a
    # fraction of the image
    decoy_style: Literal["grey", "colour"] = "grey"
    decoy_size: float = 0.11
    # centre: the target near the centre, the decoy in a border corner (Ā, the train mean map, is
    # then the answer); varied: targets at varied places and scales, the decoy anywhere off the
    # target (megl.data.synthetic.scene, docs/data.md "The synthetic benchmark")
    geometry: Literal["centre", "varied"] = "centre"
    # objects: share of questions that do not ask for the object's identity (the reader filters them)
    off_topic_fraction: float = 0.0
    # actions: samples of one extra, rare activity (the class-size filter removes it)
    rare_class_samples: int = 0
    # what the val split is drawn like. shifted: its decoys are random, as on test (selecting on it
    # reads the test distribution: DomainBed's "test-domain validation", an oracle); in_distribution:
    # its decoys agree as on train (what a user has at training time; docs/study.md)
    validation: Literal["shifted", "in_distribution"] = "shifted"

    def validate(self, where: str) -> None:
        if self.num_samples < 10:
            raise ConfigError(f"{where}.num_samples: need at least 10, got {self.num_samples}")
        if not 2 <= self.num_classes <= 20:
            raise ConfigError(f"{where}.num_classes: must be in [2, 20], got {self.num_classes}")
        if self.image_size < 32:
            raise ConfigError(f"{where}.image_size: must be >= 32, got {self.image_size}")
        if self.map_size < 8:
            raise ConfigError(f"{where}.map_size: must be >= 8, got {self.map_size}")
        if not 0.05 <= self.decoy_size <= 0.25:
            raise ConfigError(f"{where}.decoy_size: must be in [0.05, 0.25], got {self.decoy_size}")
        for name in ("decoy_agreement", "visual_fraction", "off_topic_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{where}.{name}: must be in [0, 1], got {value}")
        if self.distractors < 0 or self.rare_class_samples < 0:
            raise ConfigError(f"{where}: distractors and rare_class_samples must be >= 0")


@dataclasses.dataclass(frozen=True)
class DecoyConfig:
    """DecoyFMNIST (Ross et al. 2017's decoy protocol on Fashion-MNIST) written in the generic
    layout by the decoy@<name> stage (megl.data.decoy_fmnist.write_generic)."""

    source_dir: str  # the four IDX files (Debian's dataset-fashion-mnist: /usr/share/datasets/fashion-mnist)
    out_dir: str
    seed: int
    # train samples carrying the object's mask: 1.0 every one; 0.09 as VQA-X's share
    visual_fraction: float = 1.0
    # None: all 60,000 (the protocol); else a class-balanced, seeded subset of train (CPU budgets)
    train_samples: int | None = None

    def validate(self, where: str) -> None:
        if not 0.0 <= self.visual_fraction <= 1.0:
            raise ConfigError(f"{where}.visual_fraction: must be in [0, 1], got {self.visual_fraction}")
        if self.train_samples is not None and not 10 <= self.train_samples <= 60000:
            raise ConfigError(f"{where}.train_samples: must be in [10, 60000] or null, got {self.train_samples}")


@dataclasses.dataclass(frozen=True)
class LabelConfig:
    """How raw answers / activities become class labels. Defaults are documented in params.yaml."""

    min_samples_per_class: int
    max_classes: int
    # VQA-X only: a question must match one of these regexes (case-insensitive) to be a sample.
    question_patterns: tuple[str, ...] = ()
    exclude_answers: tuple[str, ...] = ()
    exclude_numeric_answers: bool = True
    # normalised answer -> class name, applied after normalisation (e.g. "puppy": "dog")
    aliases: dict[str, str] = dataclasses.field(default_factory=dict)
    # ACT-X only: keep the text before the first comma ("bicycling, mountain" -> "bicycling")
    coarsen: bool = False

    def validate(self, where: str) -> None:
        if self.min_samples_per_class < 1:
            raise ConfigError(f"{where}.min_samples_per_class: must be >= 1")
        if self.max_classes < 2:
            raise ConfigError(f"{where}.max_classes: must be >= 2")
        for i, pattern in enumerate(self.question_patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{where}.question_patterns[{i}]: invalid regex {pattern!r}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """Where a dataset's raw files are and how to turn them into a classification dataset."""

    layout: Literal["vqax_park", "vqax_nlx", "actx_park", "actx_nlx", "generic"]
    raw_dir: str
    image_size: int
    on_bad_sample: Literal["skip", "error"]
    labels: LabelConfig
    # None: <raw_dir>/images. Real COCO / MPII images usually live elsewhere.
    image_root: str | None = None
    # None: the layout's own place (<raw_dir>/Annotations/visual for VQA-X, <raw_dir>/visual for
    # ACT-X, <raw_dir> for generic, whose manifest names each map file)
    visual_dir: str | None = None
    # threads decoding JPEGs (PIL releases the GIL while decoding)
    decode_workers: int = 2
    # resplit: the seeded, stratified re-split of the pooled source splits (params split block);
    # source: keep each sample's source split (val carved from train when the source has none)
    split_from: Literal["resplit", "source"] = "resplit"

    @property
    def task(self) -> str:
        if self.layout == "generic":
            return "generic"
        return "objects" if self.layout.startswith("vqax") else "actions"

    def validate(self, where: str) -> None:
        if self.image_size < 8:
            raise ConfigError(f"{where}.image_size: must be >= 8, got {self.image_size}")
        if self.decode_workers < 1:
            raise ConfigError(f"{where}.decode_workers: must be >= 1")
        if self.task == "objects" and not self.labels.question_patterns:
            raise ConfigError(f"{where}.labels.question_patterns: VQA-X layouts need at least one pattern")
        if self.task != "objects" and self.labels.question_patterns:
            raise ConfigError(f"{where}.labels.question_patterns: applies to VQA-X layouts only")
        if self.task != "actions" and self.labels.coarsen:
            raise ConfigError(f"{where}.labels.coarsen: applies to ACT-X layouts only")

    # Paths are absolute once load_params has resolved them against the params file's folder.
    @property
    def raw_path(self) -> Path:
        return Path(self.raw_dir)

    @property
    def image_root_path(self) -> Path:
        return self.raw_path / "images" if self.image_root is None else Path(self.image_root)

    @property
    def visual_dir_path(self) -> Path:
        if self.visual_dir is not None:
            return Path(self.visual_dir)
        if self.task == "generic":
            return self.raw_path
        return self.raw_path / ("Annotations/visual" if self.task == "objects" else "visual")


@dataclasses.dataclass(frozen=True)
class SaliencyConfig:
    """Ground-truth map aggregation: the grids are the CAM grids of the backbones."""

    grid_sizes: tuple[int, ...]
    eps: float

    def validate(self, where: str) -> None:
        if not self.grid_sizes or any(g < 1 for g in self.grid_sizes):
            raise ConfigError(f"{where}.grid_sizes: need one or more positive sizes")
        if len(set(self.grid_sizes)) != len(self.grid_sizes):
            raise ConfigError(f"{where}.grid_sizes: sizes must be distinct")
        if not 0 < self.eps < 1e-2:
            raise ConfigError(f"{where}.eps: must be in (0, 1e-2)")


@dataclasses.dataclass(frozen=True)
class BackboneConfig:
    """One backbone (params `backbones.<name>`; megl.models.backbones builds it). profile tiny: random
    init, CPU minutes; paper: the real architecture (pretrained_path: a local transformers folder)."""

    name: str = ""  # the params key (load_params sets it)
    profile: Literal["tiny", "paper"] = "tiny"
    pretrained_path: str | None = None
    # resnet | vit; null: from the name (resnet18, vit_b16). A ViT-family folder (ViT, DeiT, DINOv2)
    # under any other name needs arch: vit.
    arch: Literal["resnet", "vit"] | None = None
    # the CAM grid this backbone produces at the dataset's image size (saliency must have it);
    # required in params (None only for a backbone built in code, which needs no grid)
    grid: int | None = None

    @property
    def family(self) -> str:
        return backbone_family(self.name, self.arch)

    def validate(self, where: str) -> None:
        if self.grid is None or self.grid < 1:
            raise ConfigError(f"{where}.grid: required, a positive CAM grid size (got {self.grid})")


# what a backbone name means when its params block sets no arch
DEFAULT_ARCH = {"resnet18": "resnet", "vit_b16": "vit"}


def backbone_family(name: str, arch: str | None = None) -> str:
    """resnet or vit: the params block's arch, else what the name means by default."""
    if arch is not None:
        return arch
    if name not in DEFAULT_ARCH:
        raise ValueError(f"backbone {name!r}: set arch (resnet or vit) in its params block")
    return DEFAULT_ARCH[name]


@dataclasses.dataclass(frozen=True)
class VariantConfig:
    """One row of the paper's tables: a method of the registry (megl.methods) and its settings.

    method megl: MEGL's terms (Table 4), each switched by visual / consistency / text (none: plain
      cross-entropy, the `-` row).
    method <a visual-EGL baseline> (gradia, haics, res_g, res_l, cdep, rrr, ...): cross-entropy +
      weight x that method's explanation loss.
    method llava / finetune_cot: the MLLM baselines (megl.models.llava_baseline): classification as
      VQA, and Fine-tune-CoT ("{explanation} --> {class}").
    A method reads only its own knobs (its registry entry lists them); setting another is an error."""

    method: str = "megl"
    visual: bool = False
    text: bool = False
    consistency: bool = False
    weight: float = 1.0  # λ of a baseline's explanation term (RES.py: 1; CDEP, RRR: their λ)
    eta: float = 0.1  # RES-G / RES-L slack of the robust term (RES README: 0.1)
    cam_mode: Literal["create_graph", "detached"] | None = None  # None: the method's, else train.cam_mode
    explainer: Literal["gradcam", "multilayer"] | None = None  # None: train.explainer
    # an MLLM baseline's model (tiny random-init or a local LLaVA-1.5); in the variant's own block, so
    # that editing it re-runs only that variant's stages. None: MLLMConfig's defaults
    mllm: MLLMConfig | None = None
    # this variant's values of train.* keys (a study's trial: its learning rate, its λs), over the
    # train block; train.seed comes from the grid
    train: dict[str, Any] | None = None
    # this variant's values of text_head.* keys (an ablation arm's encoder of I ⊙ Â), over the block
    text_head: dict[str, Any] | None = None

    def validate(self, where: str) -> None:
        # the method and the keys it reads: megl.pipeline_checks (the registry needs torch; the schema does not)
        if self.weight < 0 or self.eta < 0:
            raise ConfigError(f"{where}: weight and eta must be >= 0")


# LLaVA's `find_all_linear_names`: LoRA on every linear layer of the LM, never on the vision tower,
# the projector (trained fully) or lm_head.
LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclasses.dataclass(frozen=True)
class MLLMConfig:
    """The MLLM baselines (params.yaml block `mllm:`).

    profile: "tiny" builds a random-init LLaVA from the sizes below; "paper" loads `model_path`.
    model_path: paper only — a local LLaVA-1.5 folder (`LlavaForConditionalGeneration` weights,
        config, tokenizer and, optionally, preprocessor_config.json for the image mean/std).
    vocab_size: tiny only — size the tokenizer is trained to (plus the `<image>` token).
    vision_* / llm_*: tiny only — the CLIP vision tower and the Llama LM; the paper profile takes
        its sizes from the checkpoint. (vision_image_size / vision_patch)² image tokens go to the LM.
    lora_r / lora_alpha / lora_dropout / lora_targets: peft LoRA on the LM's linear layers
        (LLaVA's task-LoRA recipe: r 128, alpha 256, dropout 0.05, all of LLAMA_LINEAR).
    train_embeddings: token embeddings and lm_head trainable (peft modules_to_save); None means
        "tiny: yes" (a random LM has nothing to adapt) and "paper: no" (LLaVA's recipe).
    max_new_tokens: greedy decoding budget (cot needs room for the explanation and the answer).
    dtype: of the whole model; "bfloat16" for the paper profile on a GPU (LoRA weights stay fp32:
        peft's autocast_adapter_dtype).
    attn_implementation: "eager" (reference; fine at tiny sizes) or "sdpa" (paper, on a GPU).
    gradient_checkpointing: recompute LM activations in backward (7B at batch 16 needs it).
    Lives here, not in megl.models.llava_baseline, so that reading params never imports transformers.
    """

    profile: Literal["tiny", "paper"] = "tiny"
    model_path: str | None = None
    vocab_size: int = 512
    vision_image_size: int = 64
    vision_patch: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    llm_hidden: int = 64
    llm_layers: int = 2
    llm_heads: int = 4
    llm_intermediate: int = 128
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = LLAMA_LINEAR
    train_embeddings: bool | None = None
    max_new_tokens: int = 32
    dtype: Literal["float32", "bfloat16"] = "float32"
    attn_implementation: Literal["eager", "sdpa"] = "eager"
    gradient_checkpointing: bool = False
    # the prompt's question where the source has none (ACT-X, the generic layout); VQA-X samples
    # keep their own question
    default_question: str = "What is shown in the image?"

    def __post_init__(self) -> None:
        # built from YAML lists as well as from code: keep the frozen config hashable
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))

    @property
    def trains_embeddings(self) -> bool:
        return self.profile == "tiny" if self.train_embeddings is None else self.train_embeddings

    def validate(self, where: str) -> None:
        if self.profile not in ("tiny", "paper"):
            raise ConfigError(f"{where}.profile: must be 'tiny' or 'paper', got {self.profile!r}")
        for name in (
            "vocab_size", "vision_image_size", "vision_patch", "vision_hidden", "vision_layers", "vision_heads",
            "llm_hidden", "llm_layers", "llm_heads", "llm_intermediate", "lora_r", "lora_alpha", "max_new_tokens",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: must be >= 1, got {getattr(self, name)}")
        if self.vision_image_size % self.vision_patch:
            raise ConfigError(f"{where}.vision_image_size: must be a multiple of vision_patch ({self.vision_patch})")
        if self.vision_layers < 2:
            raise ConfigError(f"{where}.vision_layers: must be >= 2 (features come from the second-to-last layer)")
        for name, heads in (("vision_hidden", self.vision_heads), ("llm_hidden", self.llm_heads)):
            if getattr(self, name) % heads:
                raise ConfigError(f"{where}.{name}: must be a multiple of its head count ({heads})")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"{where}.lora_dropout: must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_targets or set(self.lora_targets) - set(LLAMA_LINEAR):
            raise ConfigError(f"{where}.lora_targets: must be a non-empty subset of {list(LLAMA_LINEAR)}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"{where}.dtype: must be 'float32' or 'bfloat16', got {self.dtype!r}")
        if self.attn_implementation not in ("eager", "sdpa"):
            raise ConfigError(f"{where}.attn_implementation: must be 'eager' or 'sdpa'")
        if self.profile == "paper" and self.model_path is None:
            raise ConfigError(f"{where}.model_path: the 'paper' profile needs a local LLaVA-1.5 folder (nothing is downloaded)")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    seed: int
    epochs: int
    batch_size: int
    lr: float  # classifier
    text_lr: float  # SDTG projections, LoRA, embeddings
    weight_decay: float
    grad_accum: int
    max_grad_norm: float
    cam_mode: Literal["create_graph", "detached"]
    cam_eps: float
    lambda_visual: float
    lambda_textual: float
    eval_batch_size: int = 64
    # how the consistency KL turns the CAM into a distribution: softmax of the raw Grad-CAM / T
    # (bounded gradient), or the paper-literal min-max-then-sum (its gradient grows as 1/(max-min)
    # and swamps CE while CAMs are flat; docs/methods.md "Why the KL sees a softmax")
    consistency_input: Literal["softmax", "minmax"] = "softmax"
    consistency_temperature: float = 1.0
    # Â for the explanation losses and the evaluation: Grad-CAM at the CAM layer, or MMEL's mix of
    # Grad-CAMs at the last `explainer_layers` stages / blocks (megl.models.multilayer_cam)
    explainer: Literal["gradcam", "multilayer"] = "gradcam"
    explainer_layers: int = 4
    # the model a run exports: the epoch of the best val accuracy (early stopping on val), or the last
    # epoch of a fixed schedule (DomainBed: no early stopping; docs/study.md "Schedule")
    checkpoint: Literal["best_val", "last"] = "best_val"
    # MEGL's L_visual per sample: the mean |Â - A| over the CAM grid's cells, or their sum (the paper's
    # Eq. 1 writes a norm: grid cells x the mean; docs/methods.md "Scales")
    visual_l1: Literal["mean", "sum"] = "mean"
    # what MEGL's L_dc pulls Â towards: the train split's mean map Ā (the paper), a uniform map, or Ā
    # with its cells in a fixed random order (the study's factorial ablation, docs/study.md)
    consistency_target: Literal["mean_map", "uniform", "shuffled"] = "mean_map"

    def validate(self, where: str) -> None:
        if self.consistency_temperature <= 0:
            raise ConfigError(f"{where}.consistency_temperature: must be > 0")
        for name in ("epochs", "batch_size", "grad_accum", "eval_batch_size", "explainer_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: must be >= 1")
        for name in ("lr", "text_lr", "max_grad_norm", "cam_eps"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{where}.{name}: must be > 0")
        for name in ("weight_decay", "lambda_visual", "lambda_textual"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{where}.{name}: must be >= 0")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    cam_threshold: float  # CAM (min-max, image size) binarised at >= this for mIoU (RES: 0.5)
    faithfulness_samples: int  # first N test samples for deletion / insertion / average drop
    faithfulness_steps: int  # RISE steps per curve
    java_timeout_s: float  # pycocoevalcap's Java calls (tokenizer, METEOR, SPICE)
    spice: bool  # SPICE when its CoreNLP jars are present
    gallery_samples: int
    efficiency_warmup: int
    efficiency_iters: int
    clipscore_clip_path: str | None = None  # local CLIP (ViT-B/32 for paper-comparable CLIPScore)

    def validate(self, where: str) -> None:
        if not 0 < self.cam_threshold < 1:
            raise ConfigError(f"{where}.cam_threshold: must be in (0, 1)")
        for name in ("faithfulness_samples", "faithfulness_steps", "efficiency_iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: must be >= 1")


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    enabled: bool
    experiment: str  # the project's one MLflow experiment (runs of every dataset, sweeps' parents)
    gallery_samples: int  # fixed validation samples in the CAM gallery and explanation table

    def validate(self, where: str) -> None:
        if not self.experiment.strip():
            raise ConfigError(f"{where}.experiment: must not be empty")
        if self.gallery_samples < 1:
            raise ConfigError(f"{where}.gallery_samples: must be >= 1")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """The Prefect ablation sweep (pipeline/flows.py, deployment megl/ablation)."""

    max_parallel: int  # runs at once (default of the flow's max_parallel); each gets cores // this threads
    retries: int  # a failed run (train + evaluate) is retried this many times before it counts as failed
    retry_delay_s: float  # seconds between retries

    def validate(self, where: str) -> None:
        if self.max_parallel < 1:
            raise ConfigError(f"{where}.max_parallel: must be >= 1, got {self.max_parallel}")
        if self.retries < 0:
            raise ConfigError(f"{where}.retries: must be >= 0, got {self.retries}")
        if self.retry_delay_s < 0:
            raise ConfigError(f"{where}.retry_delay_s: must be >= 0, got {self.retry_delay_s}")


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """What `dvc repro` trains: every dataset x backbone x variant x seed listed here."""

    datasets: tuple[str, ...]
    backbones: tuple[str, ...]
    variants: tuple[str, ...]
    # training seeds (each run's train.seed); the tables report mean (± std) over them
    seeds: tuple[int, ...]

    def validate(self, where: str) -> None:
        if not self.seeds:
            raise ConfigError(f"{where}.seeds: need at least one seed")
        negative = [s for s in self.seeds if s < 0]
        if negative:
            raise ConfigError(f"{where}.seeds: seeds must be >= 0, got {negative}")
        repeated = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if repeated:
            raise ConfigError(f"{where}.seeds: seeds must be unique, {repeated} repeated")


@dataclasses.dataclass(frozen=True)
class TextHeadConfig:
    # tiny: random-init CLIP and Llama, and a tokenizer trained on the train explanations.
    # pretrained: a local causal LM folder (llm_path) with its own tokenizer; clip_path optional
    # (null: the tiny random-init CLIP, frozen). paper: both folders (CLIP-ViT-L/14, Vicuna).
    profile: Literal["tiny", "pretrained", "paper"] = "tiny"
    prefix_grid: int = 2  # prefix = prefix_grid x prefix_grid tokens
    clip_path: str | None = None
    llm_path: str | None = None
    # another frozen encoder of I ⊙ Â in place of CLIP, any profile: a local transformers folder of a
    # CLIP or DINOv2 model (weights/dinov2-vits14 from `make weights`: no CLIP weights can be had
    # offline). null: clip_path's CLIP, else the tiny random-init one
    encoder_path: str | None = None
    # the side I ⊙ Â is resized to for a loaded encoder (null: the checkpoint's own; DINOv2's 518 is
    # costly on a CPU, 112 is 8 x 8 patches of 14 px)
    encoder_image_size: int | None = None
    vocab_size: int = 512  # size of the tokenizer trained for a tiny LLM
    max_text_tokens: int = 32  # explanation tokens + 2 (the tiny head's <bos> and <eos>)
    # The instruction of a chat-tuned LLM's user turn (its chat template, after the image prefix).
    prompt: str = "Explain which part of the image shows its class."
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    # re-learn the LLM's embedding and output layers (peft modules_to_save). null: only when the
    # tokenizer is new (tiny LLM); a pretrained LLM keeps its own tokenizer and embeddings.
    train_embeddings: bool | None = None
    # REX-style word-region attention (megl.models.word_region_attention): each token attends over
    # the prefix grid's cells before the output layer. Off: the plain SDTG head of the paper.
    word_region_attention: bool = False
    # tiny profile sizes (the paper profile takes its sizes from the checkpoints)
    clip_hidden: int = 64
    clip_layers: int = 2
    clip_heads: int = 4
    clip_image_size: int = 64
    clip_patch: int = 8
    llm_hidden: int = 64
    llm_layers: int = 2
    llm_heads: int = 4
    llm_intermediate: int = 128

    def __post_init__(self) -> None:
        # built from code as well as from YAML: a list keeps the frozen config hashable as a tuple
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        self.validate("text_head")

    def validate(self, where: str) -> None:
        for name in ("prefix_grid", "vocab_size", "lora_r", "clip_layers", "clip_heads", "clip_patch", "llm_layers", "llm_heads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: must be >= 1, got {getattr(self, name)}")
        if self.max_text_tokens < 2:
            raise ConfigError(f"{where}.max_text_tokens: must be >= 2 (room for <bos> and <eos>), got {self.max_text_tokens}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"{where}.lora_dropout: must be in [0, 1), got {self.lora_dropout}")
        needed = {"tiny": (), "pretrained": ("llm_path",), "paper": ("clip_path", "llm_path")}[self.profile]
        for name in needed:
            if getattr(self, name) is None:
                raise ConfigError(f"{where}.{name}: the {self.profile!r} profile needs a local checkpoint folder (nothing is downloaded)")
        if self.encoder_path is not None and self.clip_path is not None:
            raise ConfigError(f"{where}.encoder_path: set beside clip_path; the head has one encoder of I ⊙ Â")
        if self.encoder_image_size is not None and self.encoder_image_size < 1:
            raise ConfigError(f"{where}.encoder_image_size: must be >= 1, got {self.encoder_image_size}")
        if self.profile == "tiny":
            for name in ("clip_path", "llm_path"):
                if getattr(self, name) is not None:
                    raise ConfigError(f"{where}.{name}: set, but profile is 'tiny' (random init); use profile: pretrained or paper")

    @property
    def relearn_embeddings(self) -> bool:
        return self.llm_path is None if self.train_embeddings is None else self.train_embeddings


@dataclasses.dataclass(frozen=True)
class ComputeConfig:
    """How torch computes in every stage process (train, evaluate). The thread count is a run
    parameter, not a property of the machine or the launcher: float sums are split across intra-op
    threads, so the same params at another thread count give (slightly) different numbers."""

    threads: int  # torch intra-op threads of each train / evaluate process, whoever launches it
    # portable: the same kernels on every x86-64 CPU, so numbers do not depend on the machine
    # (megl.numerics); native: torch's own choice for this CPU (faster, machine-dependent numbers)
    cpu_kernels: Literal["portable", "native"] = "portable"

    def validate(self, where: str) -> None:
        if self.threads < 1:
            raise ConfigError(f"{where}.threads: must be >= 1, got {self.threads}")


@dataclasses.dataclass(frozen=True)
class SelectionConfig:
    """The study's model selection rule, declared before its runs (megl.study.selection): maximise
    validation `metric`; trials within `tolerance` of the best are tied; among them maximise
    `tie_break`; then the lowest trial number. Metrics of metrics/<run>/val.json."""

    metric: Literal["accuracy", "f1", "miou"] = "accuracy"
    tolerance: float = 0.01
    tie_break: Literal["accuracy", "f1", "miou"] | None = "miou"

    def validate(self, where: str) -> None:
        if not 0 <= self.tolerance < 1:
            raise ConfigError(f"{where}.tolerance: must be in [0, 1), got {self.tolerance}")


@dataclasses.dataclass(frozen=True)
class StudySource:
    """An ablation's values: another study's selection (studies/<study>/selection.json) of one of its
    variants, per dataset and backbone."""

    study: str
    variant: str


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """The fair comparison (pipeline/study.py, docs/study.md): `trials` seeded random draws from
    each compared variant's search space (its method's, megl.methods), trained with `search_seed`
    and selected by `selection` on validation data; the selected ones on `final_seeds`. With
    `hyperparameters_from` an ablation instead: no search, every variant (an arm) at the values
    another study selected, on `final_seeds`, paired against `baseline` (the unablated arm)."""

    name: str
    datasets: tuple[str, ...]
    backbones: tuple[str, ...]
    variants: tuple[str, ...]  # the compared methods: variant names of the variants block
    baseline: str  # the variant every paired difference is taken against
    search_seed: int  # the trials' draws and the search runs' training seed
    trials: int
    final_seeds: tuple[int, ...]
    selection: SelectionConfig = SelectionConfig()
    hyperparameters_from: StudySource | None = None

    def validate(self, where: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            raise ConfigError(f"{where}.name: a plain folder name, got {self.name!r}")
        if self.hyperparameters_from is None and self.trials < 1:
            raise ConfigError(f"{where}.trials: must be >= 1, got {self.trials}")
        if self.hyperparameters_from is not None and self.trials != 0:
            raise ConfigError(f"{where}.trials: an ablation at {self.hyperparameters_from.study}'s selected values "
                              f"searches nothing: set 0, got {self.trials}")
        if self.hyperparameters_from is not None and self.hyperparameters_from.study == self.name:
            raise ConfigError(f"{where}.hyperparameters_from.study: another study's name, not its own")
        if self.baseline not in self.variants:
            raise ConfigError(f"{where}.baseline: {self.baseline!r} is not in {where}.variants {list(self.variants)}")
        if not self.final_seeds or self.search_seed in self.final_seeds:
            raise ConfigError(f"{where}.final_seeds: need at least one seed, none equal to search_seed "
                              f"{self.search_seed} (the selected run's luck on validation would reach the test)")
        if len(set(self.final_seeds)) != len(self.final_seeds) or min(self.final_seeds) < 0:
            raise ConfigError(f"{where}.final_seeds: unique seeds >= 0, got {list(self.final_seeds)}")


@dataclasses.dataclass(frozen=True)
class Params:
    root: Path  # the params file's folder: relative paths in the file, and stage outputs, live under it
    split: SplitConfig
    synthetic: dict[str, SyntheticConfig]
    datasets: dict[str, DatasetConfig]
    saliency: SaliencyConfig
    grid: GridConfig
    backbones: dict[str, BackboneConfig]
    variants: dict[str, VariantConfig]
    train: TrainConfig
    evaluate: EvaluateConfig
    tracking: TrackingConfig
    sweep: SweepConfig
    compute: ComputeConfig
    text_head: TextHeadConfig  # the SDTG head (megl.models.sdtg)
    # raw data the pipeline makes from installed packages (decoy@<name> stages)
    decoys: dict[str, DecoyConfig] = dataclasses.field(default_factory=dict)
    study: StudyConfig | None = None  # configs/study.yaml sets it for pipeline/study.py

    def validate(self, where: str) -> None:
        self._check_grid_names(self.grid, "grid.{kind}:")
        # the global blocks first: each variant's own values are checked merged over them, and a bad
        # global value must be named as itself, not as the first variant with a train: block
        self.train.validate("train")
        self.text_head.validate("text_head")
        for name, variant in self.variants.items():
            self.variant_train(name, f"variants.{name}.train")  # ConfigError naming a bad override
            self.variant_text_head(name, f"variants.{name}.text_head")
        if self.study is not None:
            self._check_grid_names(GridConfig(self.study.datasets, self.study.backbones, self.study.variants, (0,)),
                                   "study.{kind}:")
        for name in self.grid.backbones:
            grid = self.backbones[name].grid
            if grid not in self.saliency.grid_sizes:
                raise ConfigError(
                    f"backbones.{name}.grid: {grid} is not in saliency.grid_sizes {list(self.saliency.grid_sizes)} "
                    "(training reads the ground-truth maps at the backbone's CAM grid)"
                )

    def _check_grid_names(self, grid: GridConfig, label: str) -> None:
        for kind, names, known in (
            ("datasets", grid.datasets, self.datasets),
            ("backbones", grid.backbones, self.backbones),
            ("variants", grid.variants, self.variants),
        ):
            unknown = sorted(set(names) - set(known))
            if unknown:
                raise ConfigError(f"{label.format(kind=kind)} {unknown} not defined in the {kind} block "
                                  f"(it defines: {', '.join(sorted(known))})")

    def select_grid(self, datasets=None, backbones=None, variants=None, seeds=None, label: str = "{kind}:") -> GridConfig:
        """The params grid with any of its lists replaced (a sweep's or a table's selection; None or
        empty keeps the grid's), checked as params.yaml's grid is. `label` names a list in errors."""
        grid = GridConfig(
            tuple(datasets or self.grid.datasets),
            tuple(backbones or self.grid.backbones),
            tuple(variants or self.grid.variants),
            tuple(int(s) for s in seeds) if seeds is not None else self.grid.seeds,
        )
        grid.validate("grid")
        self._check_grid_names(grid, label)
        return grid

    def backbone(self, name: str) -> BackboneConfig:
        if name not in self.backbones:
            raise ConfigError(f"unknown backbone {name!r}; params.yaml defines {sorted(self.backbones)}")
        return self.backbones[name]

    def variant(self, name: str) -> VariantConfig:
        if name not in self.variants:
            raise ConfigError(f"unknown variant {name!r}; params.yaml defines {sorted(self.variants)}")
        return self.variants[name]

    def dataset(self, name: str) -> DatasetConfig:
        if name not in self.datasets:
            raise ConfigError(f"unknown dataset {name!r}; params.yaml defines {sorted(self.datasets)}")
        return self.datasets[name]

    def variant_train(self, name: str, where: str | None = None) -> TrainConfig:
        """The train block with the variant's own `train:` values over it (checked as the block is)."""
        own = self.variant(name).train
        if not own:
            return self.train
        where = where or f"variants.{name}.train"
        if "seed" in own:
            raise ConfigError(f"{where}.seed: a run's seed comes from grid.seeds, not from its variant")
        merged = build_dataclass(TrainConfig, dataclasses.asdict(self.train) | dict(own), where)
        merged.validate(where)
        return merged

    def variant_text_head(self, name: str, where: str | None = None) -> TextHeadConfig:
        """The text_head block with the variant's own `text_head:` values over it (paths against the
        params file's folder, as the block's)."""
        own = self.variant(name).text_head
        if not own:
            return self.text_head
        where = where or f"variants.{name}.text_head"
        block = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.text_head).items()}
        merged = build_dataclass(TextHeadConfig, block | dict(own), where)
        return _text_head_paths(merged, lambda path: None if path is None else str(Path(self.root) / path))

    def for_run(self, variant: str, seed: int) -> "Params":
        """These params for one run: the variant's train and text_head values over those blocks,
        train.seed the run's. The run, its export and its tracked params carry them."""
        return dataclasses.replace(self, train=dataclasses.replace(self.variant_train(variant), seed=seed),
                                   text_head=self.variant_text_head(variant))

    def synthetic_source(self, name: str) -> SyntheticConfig:
        if name not in self.synthetic:
            raise ConfigError(f"no synthetic block {name!r}; params.yaml defines {sorted(self.synthetic)}")
        return self.synthetic[name]


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    path = Path(path)
    try:
        raw = read_yaml(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    if "root" in raw:
        raise ConfigError(f"{path}: 'root' is not a params key (it is the params file's folder)")
    root = path.resolve().parent
    try:
        params = build_dataclass(Params, {**raw, "root": str(root)}, "")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    params = _resolve_paths(params, root)
    try:
        validate_tree(params, "")
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return params


TEXT_HEAD_PATHS = ("clip_path", "llm_path", "encoder_path")


def _text_head_paths(head: TextHeadConfig, absolute) -> TextHeadConfig:
    return dataclasses.replace(head, **{k: absolute(getattr(head, k)) for k in TEXT_HEAD_PATHS})


def _resolve_paths(params: Params, root: Path) -> Params:
    """Make every path absolute against the params file's folder (DVC may run stages elsewhere)."""

    def absolute(path: str | None) -> str | None:
        return None if path is None else str(root / path)  # an absolute path stays as it is

    datasets = {
        name: dataclasses.replace(
            d, raw_dir=absolute(d.raw_dir), image_root=absolute(d.image_root), visual_dir=absolute(d.visual_dir)
        )
        for name, d in params.datasets.items()
    }
    synthetic = {name: dataclasses.replace(s, out_dir=absolute(s.out_dir)) for name, s in params.synthetic.items()}
    decoys = {
        name: dataclasses.replace(d, source_dir=absolute(d.source_dir), out_dir=absolute(d.out_dir))
        for name, d in params.decoys.items()
    }
    backbones = {name: dataclasses.replace(b, name=name, pretrained_path=absolute(b.pretrained_path))
                 for name, b in params.backbones.items()}
    evaluate = dataclasses.replace(params.evaluate, clipscore_clip_path=absolute(params.evaluate.clipscore_clip_path))
    variants = {
        name: v if v.mllm is None else dataclasses.replace(v, mllm=dataclasses.replace(v.mllm, model_path=absolute(v.mllm.model_path)))
        for name, v in params.variants.items()
    }
    text_head = _text_head_paths(params.text_head, absolute)
    return dataclasses.replace(
        params, root=root, datasets=datasets, synthetic=synthetic, backbones=backbones, evaluate=evaluate,
        text_head=text_head, decoys=decoys, variants=variants,
    )
