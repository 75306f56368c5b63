"""Flow matching on the linear path: the suite's second generative core, beside the VP-SDE one.

  path      x_t = (1 - t) x_0 + t x_1,   x_0 ~ N(0, I) noise, x_1 an action of the data, t ~ U(0, 1)
  loss      E || v(x_t, t, s) - (x_1 - x_0) ||^2         (its minimiser is E[x_1 - x_0 | x_t, s])
  sampling  dx/dt = v(x, t, s) from t = 0 to 1 by `steps` Euler steps of 1 / steps, which carries N(0, I)
            to the actions' distribution as the steps grow (Lipman et al. 2023; Liu et al. 2023)
The sampler is differentiable unless called under no_grad, and takes the starting noise from the caller, so
a one-step policy can be distilled onto it noise for noise (FQL). Any algorithm can use it as its behaviour
model: `FlowModel(VectorField(...), action_dim)`.
"""

from __future__ import annotations

import torch
from torch import nn


class FlowModel(nn.Module):
    """A state-conditioned velocity field v(x, t, s) on the linear path, with its loss and Euler sampler."""

    def __init__(self, net: nn.Module, action_dim: int):
        super().__init__()
        self.net, self.action_dim = net, action_dim

    def loss(self, actions: torch.Tensor, states: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The flow-matching loss, averaged over the batch and the action dimensions (FQL's `bc_flow_loss`)."""
        x0 = torch.randn(actions.shape, device=actions.device, generator=generator)
        t = torch.rand((actions.shape[0],), device=actions.device, generator=generator)
        xt = (1 - t[:, None]) * x0 + t[:, None] * actions
        return (self.net(xt, t, states) - (actions - x0)).pow(2).mean()

    def sample(self, states: torch.Tensor, steps: int, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """One action per state by `steps` Euler steps from `noise` (drawn when not given), not clipped."""
        x = noise if noise is not None else torch.randn((states.shape[0], self.action_dim), device=states.device,
                                                         generator=generator)
        for i in range(steps):
            x = x + self.net(x, i / steps, states) / steps
        return x
