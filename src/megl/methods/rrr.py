"""RRR (Ross et al. 2017, "Right for the right reasons"; `dtak/rrr`): penalise the squared input
gradients of the summed log-probabilities inside the region marked irrelevant (here the background
of the human map, 1 − [A > 0]): λ · Σ_mask (∂ Σ_k log p_k / ∂x)². Double backprop to the input.
"""

from __future__ import annotations

import torch

from megl.losses import positive_region
from megl.methods.base import LogUniform, Method, StepInputs


def rrr_penalty(input_grads: torch.Tensor, irrelevant: torch.Tensor) -> torch.Tensor:
    """Ross et al. 2017's right-reasons term per sample: sum over pixels and channels of
    (A ⊙ ∂ Σ_k log p_k / ∂x)², A the irrelevant region (B, H, W) -> (B,)."""
    return (irrelevant.unsqueeze(1) * input_grads).pow(2).flatten(1).sum(1)


def rrr_terms(x: StepInputs) -> dict[str, torch.Tensor]:
    # Σ_k log p_k; with BatchNorm in train mode a sample's input gradient also carries the small
    # batch-statistics coupling (Ross et al.'s MLP had none)
    (grads,) = torch.autograd.grad(x.out.logits.log_softmax(1).sum(), x.pixels, create_graph=True)
    irrelevant = 1 - positive_region(x.batch["input_map"])
    # Ross et al. sum both terms over the batch; CE here is a batch mean, so is the penalty
    penalty = (rrr_penalty(grads, irrelevant) * x.batch["has_map"].to(grads.dtype)).mean()
    return {"rrr": x.model.variant.weight * penalty}


# Ross et al. use λ = 1000 on their decoy experiments; Friedrich et al. 10 on DecoyFMNIST.
RRR = Method(name="rrr", display="RRR", group="explanation", reference="Ross et al. 2017 (RRR)", terms=rrr_terms,
             input_gradients=True, knobs=frozenset({"weight"}), space={"variant.weight": LogUniform(1.0, 1e4)})
