"""Every critic's wiring on an MDP with a known answer: terminals end the return, time limits do not.

Two absorbing states, reward 1 at every step whatever the action, gamma 0.5: state A's steps all end by
termination, so Q(A, .) = 1; state B loops on itself and is only ever cut by a time limit, so Q(B, .) =
1 / (1 - gamma) = 2. A critic that bootstraps through terminals reads 2 at A; one that stops at time limits
reads 1 at B; one whose reward or discount is wired wrong misses both. Each algorithm trains its own critic, the
way it does on real data (its reward transform left out: the rewards are the MDP's)."""

import dataclasses

import numpy as np
import pytest
import torch

from envs.transitions import Transitions
from policies import registry

N = 256
# per algorithm: its critic's steps and target rate, and whatever else its other stages need to stay tiny
SETTINGS = {
    "td3bc": {"steps": 3000, "tau": 0.05},
    "iql": {"critic_steps": 3000, "actor_steps": 5, "target_tau": 0.05},
    "diffusion_ql": {"steps": 1500, "tau": 0.05},
    "idql": {"critic_steps": 3000, "behaviour_steps": 5, "target_tau": 0.05},
    # an untrained behaviour model's support actions fall far outside the box; clamped, as the cpu preset does
    "qgpo": {"q_steps": 3000, "tau": 0.05, "behaviour_steps": 5, "energy_steps": 5, "support_clip": True},
}


def absorbing(umaze) -> object:
    """The tiny maze's spaces with the two-state MDP's transitions: half the rows at A (terminal), half at B."""
    obs_dim, act_dim = umaze.transitions.obs_dim, umaze.transitions.action_dim
    obs = np.concatenate([np.zeros((N // 2, obs_dim)), np.ones((N // 2, obs_dim))])
    actions = np.random.default_rng(0).uniform(-1, 1, (N, act_dim))
    ends = np.zeros(N)
    t = Transitions.from_arrays(observations=obs, actions=actions, rewards=np.ones(N), next_observations=obs,
                                terminals=np.r_[np.ones(N // 2), np.zeros(N // 2)],
                                timeouts=np.r_[np.zeros(N // 2), np.ones(N // 2)] + ends,
                                episode_starts=np.arange(N + 1))
    return dataclasses.replace(umaze, transitions=t)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_each_critic_stops_at_terminals_and_bootstraps_through_time_limits(umaze, name):
    data = absorbing(umaze)
    config = registry.make_config(name, "tiny", {"device": "cpu", "gamma": 0.5, **SETTINGS[name]})
    algo = registry.get(name).for_dataset(data, config)
    torch.manual_seed(0)
    algo.fit(data)
    q = algo.q_function()
    states = torch.stack([torch.zeros(data.transitions.obs_dim), torch.ones(data.transitions.obs_dim)])
    with torch.no_grad():
        values = q(states.repeat_interleave(16, 0), torch.rand(32, data.transitions.action_dim) * 2 - 1).view(2, 16)
    assert values[0].mean().item() == pytest.approx(1.0, abs=0.1), f"{name}: Q at the terminal state"
    assert values[1].mean().item() == pytest.approx(2.0, abs=0.15), f"{name}: Q at the time-limited loop"
