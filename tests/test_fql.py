"""FQL: the one-step policy's loss has the closed-form optimum of its two terms, the critic's gradient never enters
it, and a trained FQL beats a random policy on the tiny maze."""

import pytest
import torch
from torch import nn

from policies import registry
from policies.algorithms.fql import FQL, distill_loss
from policies.core.flow import FlowModel
from policies.core.networks import VectorField

from .checks import assert_beats_random, check_acting

C0 = torch.tensor([0.3, -0.2])  # the flow's constant velocity: flow(z) = z + C0 exactly, by any Euler steps
GOAL, K = torch.tensor([0.8, 0.5]), 2.0  # Q(a) = -K/2 |a - GOAL|^2


class Constant(nn.Module):
    def forward(self, x, t, states):
        return C0.expand(x.shape[0], 2)


class Bowl(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))  # a weight the actor's loss must leave alone

    def forward(self, states, actions):
        return -self.scale * K / 2 * (actions - GOAL).pow(2).sum(-1)


def trained_onestep(alpha: float, steps: int = 1500) -> tuple[nn.Module, Bowl]:
    torch.manual_seed(0)
    onestep, critic = VectorField(2, 1, hidden=64, layers=2, timed=False), Bowl()
    flow, g = FlowModel(Constant(), 2), torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(onestep.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        z = torch.randn((256, 2), generator=g)
        loss = distill_loss(onestep, flow, critic, torch.zeros(256, 1), z, alpha, 3, lambda a: a, False)
        opt.zero_grad(), loss.backward(), opt.step(), schedule.step()
        assert critic.scale.grad is None  # the critic reads as a constant
    return onestep, critic


@pytest.mark.parametrize("alpha", [0.5, 4.0])
def test_the_one_step_policy_settles_at_the_closed_form_optimum_of_distillation_and_q(alpha):
    """Per noise z, alpha |pi - f(z)|^2 / A - Q(pi) with f(z) = z + C0 and Q = -K/2 |pi - GOAL|^2 is minimised at
    pi(z) = (2 alpha / A f(z) + K GOAL) / (2 alpha / A + K) (A = 2 action dimensions averaged over)."""
    onestep, _ = trained_onestep(alpha)
    z = torch.randn((512, 2), generator=torch.Generator().manual_seed(5)).clamp(-2, 2)
    w = 2 * alpha / 2
    exact = (w * (z + C0) + K * GOAL) / (w + K)
    with torch.no_grad():
        got = onestep(z, None, torch.zeros(512, 1))
    assert (got - exact).abs().mean() < 0.05, (got - exact).abs().mean()
    # the two terms both bind: the optimum is neither the flow's action nor the critic's best
    assert (exact - (z + C0)).abs().mean() > 0.1 and (exact - GOAL).abs().mean() > 0.1


def test_fql_acts_in_bounds_reproducibly_and_the_same_after_loading(umaze, tmp_path):
    algo = FQL.for_dataset(umaze, registry.make_config("fql", "tiny", {"device": "cpu"}))
    algo.fit(umaze, tmp_path)
    check_acting(algo, umaze, tmp_path)
    assert algo.cost["nfe_per_action"] == 1


def test_the_official_alpha_per_domain_and_the_recommendation_elsewhere():
    assert FQL.dataset_overrides("paper", "ogbench/cube-single-play-v0") == {"alpha": 300.0}
    assert FQL.dataset_overrides("paper", "ogbench/puzzle-3x3-play-v0") == {"alpha": 1000.0}
    assert FQL.dataset_overrides("paper", "antmaze-large-play-v2") == {"alpha": 3.0, "steps": 500_000}
    assert FQL.dataset_overrides("cpu", "diffbench/hopper/medium-small-v0") == {"normalize_q_loss": True}


def test_a_trained_fql_beats_a_random_policy_on_the_tiny_maze(umaze):
    """31.8 +- 3.2 against the random policy's 6.6 +- 2.9 when written (MLP BC at this budget: 19.2)."""
    algo = FQL.for_dataset(umaze, registry.make_config("fql", "tiny", {"device": "cpu", "hidden": 128, "q_hidden": 128,
                                                                    "steps": 1500, "batch": 256, "lr": 1e-3,
                                                                    "flow_steps": 10, "normalize_q_loss": True}))
    algo.fit(umaze)
    assert_beats_random(algo, umaze)
