"""The MLLM baselines of the paper's Tables 2, 3 and 5 (megl.models.llava_baseline): LLaVA-1.5
fine-tuned for classification as VQA (`haotian-liu/LLaVA`), and Fine-tune-CoT (Ho et al., ACL 2023),
whose target is "{explanation} --> {class}". Their loss is the language model's own token NLL: no
Grad-CAM, no explanation term; one model per dataset (they have no classifier backbone).
"""

from __future__ import annotations

from megl.methods.base import LogUniform, Method

_MLLM = dict(group="mllm", model="mllm", once_per_dataset=True, knobs=frozenset({"mllm"}),
             space={"train.text_lr": LogUniform(1e-4, 1e-2)})

LLAVA = Method(name="llava", display="-", reference="Liu et al. 2024 (LLaVA-1.5), classification as VQA", **_MLLM)
FINETUNE_COT = Method(name="finetune_cot", display="Fine-tune-CoT", reference="Ho et al. 2023 (Fine-tune-CoT)",
                      writes_explanations=lambda v: True, **_MLLM)
METHODS = (LLAVA, FINETUNE_COT)
