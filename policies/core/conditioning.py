"""A new control y on a pretrained noise network: CTRL's augmentation, and classifier-free guidance.

Labels travel as extra state columns, [s, y_1, ..., y_c] as floats (NULL = -1: no label for that
control), so the fine-tuning core's chains, trajectories and samplers carry them without knowing.

`LabelledNet` adds one embedding per control to the pretrained net's time embedding. The embeddings
start at zero, so the conditioned model starts as exactly the pretrained one (KL = 0), and a NULL
label adds nothing. `LabelBlind` is the pretrained model reading the same extended states and ignoring
the labels: the reference every KL is taken against.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from policies.core.diffusion import DiffusionModel
from policies.errors import ConfigError
from policies.core.networks import ScoreNet
from policies.core.training import optimiser_step, run_steps

NULL = -1


def with_labels(states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[s, y] with labels (N, c) of class indices (NULL for none) as float columns."""
    return torch.cat([states, labels.to(states.dtype)], -1)


def split_labels(extended: torch.Tensor, controls: int) -> tuple[torch.Tensor, torch.Tensor]:
    return extended[:, : extended.shape[1] - controls], extended[:, extended.shape[1] - controls :].round().long()


class LabelledNet(nn.Module):
    """eps(x, t, [s, y]): a ScoreNet whose time embedding is shifted by sum_j emb_j(y_j) (zero-initialised)."""

    def __init__(self, net: ScoreNet, classes: Sequence[int]):
        super().__init__()
        if not classes or min(classes) < 2:
            raise ConfigError(f"every control needs at least two classes, got {list(classes)}")
        self.net, self.classes = net, tuple(int(c) for c in classes)
        self.embeddings = nn.ModuleList(nn.Embedding(c, net.time_dim) for c in self.classes)
        for e in self.embeddings:
            nn.init.zeros_(e.weight)

    def shift(self, labels: torch.Tensor) -> torch.Tensor:
        out = 0.0
        for j, (embedding, c) in enumerate(zip(self.embeddings, self.classes)):
            y = labels[:, j]
            if ((y < NULL) | (y >= c)).any():
                raise ConfigError(f"control {j} has classes 0..{c - 1} (or {NULL}: none); got labels "
                                  f"{sorted(set(y.tolist()) - set(range(NULL, c)))}")
            out = out + embedding(y.clamp(min=0)) * (y >= 0).unsqueeze(-1).to(embedding.weight.dtype)
        return out

    def condition(self, extended: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states, labels = split_labels(extended, len(self.classes))
        return self.net.condition(states), self.shift(labels)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, extended: torch.Tensor) -> torch.Tensor:
        cond, shift = self.condition(extended)
        return self.net.eps(x, t, cond, shift)


class ConditionalDiffusion(DiffusionModel):
    """A copy of a pretrained model with new controls; states are [s, y]. With `guidance_weight` w != 1
    it samples by classifier-free guidance, eps_null + w (eps_y - eps_null) (Ho & Salimans 2022)."""

    def __init__(self, pretrained: DiffusionModel, classes: Sequence[int], guidance_weight: float = 1.0):
        # the copy trains whole, even when the pretrained model was frozen (a frozen copy would leave
        # classifier-free guidance only the label embedding to learn with)
        super().__init__(pretrained.action_dim, pretrained.state_dim + len(classes), schedule=pretrained.schedule,
                         net=LabelledNet(copy.deepcopy(pretrained.net).requires_grad_(True), classes))
        self.controls = len(classes)
        self.guidance_weight = guidance_weight

    def noise_fn(self, states: torch.Tensor):
        cond, shift = self.net.condition(states)
        eps = self.net.net.eps
        w = self.guidance_weight
        if w == 1.0:
            return lambda x, t: eps(x, t, cond, shift)
        return lambda x, t: torch.lerp(eps(x, t, cond), eps(x, t, cond, shift), w)


class _BlindNet(nn.Module):
    def __init__(self, net: nn.Module, controls: int):
        super().__init__()
        self.net, self.controls = net, controls

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, extended: torch.Tensor) -> torch.Tensor:
        return self.net(x, t, extended[:, : extended.shape[1] - self.controls])


class LabelBlind(DiffusionModel):
    """The pretrained model (shared, not copied) on extended states [s, y], ignoring y."""

    def __init__(self, pretrained: DiffusionModel, controls: int):
        super().__init__(pretrained.action_dim, pretrained.state_dim + controls, schedule=pretrained.schedule,
                         net=_BlindNet(pretrained.net, controls))
        self.pretrained, self.controls = pretrained, controls

    def noise_fn(self, states: torch.Tensor):
        return self.pretrained.noise_fn(states[:, : states.shape[1] - self.controls])


def fit_conditional(model: ConditionalDiffusion, states: torch.Tensor, actions: torch.Tensor, labels: torch.Tensor, *,
                    steps: int, batch: int, lr: float, drop: float, generator: torch.Generator) -> dict:
    """Classifier-free guidance's training: denoising score matching on labelled data, each label
    replaced by NULL with probability `drop`, so one network learns eps(x, t, y) and eps(x, t)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = actions.shape[0]

    def step(_: int) -> torch.Tensor:
        i = torch.randint(n, (batch,), device=actions.device, generator=generator)
        y = labels[i].clone()
        y[torch.rand(y.shape, device=y.device, generator=generator) < drop] = NULL
        return optimiser_step(opt, model.loss(actions[i], with_labels(states[i], y), generator))

    model.train()
    record = run_steps(step, steps, "conditional")
    model.eval()
    return record
