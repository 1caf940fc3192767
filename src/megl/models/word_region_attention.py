"""REX-style word-region attention for the SDTG head (docs/reference.md "The papers the explainers come from").

REX couples each word of an explanation with the image region it refers to. Here each token's
last hidden state h_t attends over the prefix grid's regions r (the SDTG prefix tokens, each plus
a learned embedding of its grid cell, so that *which* cell was attended reaches the token), and
the attended context is added to h_t before the LM's output layer:

    a_t = softmax(q(h_t) · k(r)ᵀ / √d),   h'_t = h_t + o(a_t · v(r)),   logits_t = lm_head(h'_t)

Every token of the causal LM already attends over the prefix through self-attention; what this
adds is one explicit distribution per word over the grid cells (`weights`), and the cell's
identity in what it returns, which the prefix tokens carry only through the LM's 1-D positions.
`o` starts at zero, so an untrained layer leaves the head's output as it was.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class WordRegionAttention(nn.Module):
    def __init__(self, hidden: int, grid: int) -> None:
        super().__init__()
        self.q = nn.Linear(hidden, hidden, bias=False)
        self.k = nn.Linear(hidden, hidden, bias=False)
        self.v = nn.Linear(hidden, hidden, bias=False)
        self.cell = nn.Parameter(torch.randn(grid * grid, hidden) * 0.02)
        self.o = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.o.weight)
        nn.init.zeros_(self.o.bias)

    def forward(self, hidden: torch.Tensor, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden (B, T, d), regions (B, R, d) -> (hidden with the attended context, (B, T, R) weights)."""
        regions = regions.to(hidden.dtype) + self.cell.to(hidden.dtype)
        scores = self.q(hidden) @ self.k(regions).transpose(1, 2) / math.sqrt(hidden.shape[-1])
        weights = scores.softmax(-1)
        return hidden + self.o(weights @ self.v(regions)), weights
