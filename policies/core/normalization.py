"""Observation normalisation by the dataset's statistics (TD3+BC's and CORL's IQL's), kept with the checkpoint."""

from __future__ import annotations

import torch
from torch import nn


class StateNorm(nn.Module):
    """(s - mean) / std with the dataset's mean and std (std + 1e-3, TD3+BC's); identity until `fit`."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, states: torch.Tensor) -> None:
        self.mean.copy_(states.mean(0))
        self.std.copy_(states.std(0) + 1e-3)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return (states - self.mean) / self.std
