"""IQL: expectile 0.5 evaluates the behaviour policy (SARSA) on an MDP with a known answer; higher expectiles
approach the best in-support action; end to end with acting and bad configs (resume: the contract suite)."""

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from envs.dataset import OfflineDataset
from envs.transitions import Transitions
from policies import registry
from policies.algorithms.iql import IQL, expectile_loss
from policies.errors import ConfigError

from .checks import check_acting, offset_bandit

GAMMA, BONUS = 0.5, np.array([0.0, 1.0])


def tiny(**overrides):
    return registry.make_config("iql", "tiny", {"device": "cpu", **overrides})


def two_state_mdp(n: int = 8192, seed: int = 0) -> OfflineDataset:
    """States 0 and 1 (one-hot); a ~ U[-1, 1] (the behaviour policy mu); r = a + BONUS[s]; s' = 1 if a > 0 else 0."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 2, n)
    a = rng.uniform(-1, 1, n)
    s2 = (a > 0).astype(int)
    eye = np.eye(2)
    t = Transitions.from_arrays(observations=eye[s], actions=a[:, None], rewards=a + BONUS[s], next_observations=eye[s2],
                                terminals=np.zeros(n), timeouts=np.zeros(n), episode_starts=np.array([0, n]))
    box = spaces.Box(0.0, 1.0, (2,))
    return OfflineDataset(id="two-state-mdp", source="minari", location="", transitions=t, observation_space=box,
                          action_space=spaces.Box(-1.0, 1.0, (1,)), raw_observation_space=box, observation_layout=(),
                          ref_min_score=None, ref_max_score=None, eval_env_spec=None)


def test_at_expectile_one_half_the_value_is_sarsas_of_the_behaviour_policy():
    """Under mu: E[r | s] = BONUS[s], and s' is 0 or 1 with probability 1/2 from either state, so
    V_mu = (I - gamma P)^-1 BONUS with P = [[.5, .5], [.5, .5]]."""
    ds = two_state_mdp()
    algo = IQL.for_dataset(ds, tiny(hidden=64, critic_steps=3000, actor_steps=0, batch=256, expectile=0.5, gamma=GAMMA,
                                    critic_lr=1e-3, target_tau=0.05, normalize_states=False))
    algo.fit(ds)
    exact = np.linalg.solve(np.eye(2) - GAMMA * np.full((2, 2), 0.5), BONUS)
    with torch.no_grad():
        learned = algo.value(torch.eye(2)).numpy()
    np.testing.assert_allclose(learned, exact, atol=0.05)
    # a higher expectile reaches toward the best in-support action (a -> 1), above the behaviour's value
    greedy = IQL.for_dataset(ds, tiny(hidden=64, critic_steps=3000, actor_steps=0, batch=256, expectile=0.9, gamma=GAMMA,
                                      critic_lr=1e-3, target_tau=0.05, normalize_states=False))
    greedy.fit(ds)
    with torch.no_grad():
        assert (greedy.value(torch.eye(2)).numpy() > learned + 0.2).all()


def test_the_actor_moves_toward_the_higher_advantage_action_on_the_states_it_was_trained_on():
    """exp(beta adv) weighs each state's better actions up, so the policy leaves behaviour cloning's 0 toward -1 in
    state 0 and +1 in state 1 (with exp(-beta adv) it would go the other way); and it acts on states normalised as
    in training (raw, they sit 100 away from anything the actor saw, and the two states' actions are not told apart)."""
    ds = offset_bandit()
    algo = IQL.for_dataset(ds, tiny(hidden=64, critic_steps=1500, actor_steps=1500, batch=256, critic_lr=1e-3,
                                    actor_lr=1e-3, target_tau=0.05))
    algo.fit(ds)
    actions = algo.act(np.eye(2) + 100.0)[:, 0]
    assert actions[0] < -0.3 and actions[1] > 0.3, actions


def test_the_expectile_loss_weighs_each_side():
    u = torch.tensor([-2.0, 1.0])
    assert float(expectile_loss(u, 0.5)) == pytest.approx((0.5 * 4 + 0.5 * 1) / 2)
    assert float(expectile_loss(u, 0.9)) == pytest.approx((0.1 * 4 + 0.9 * 1) / 2)


def test_iql_runs_end_to_end_and_acts_in_bounds(umaze, tmp_path):
    algo = IQL.for_dataset(umaze, tiny())
    record = algo.fit(umaze, tmp_path)
    assert record["cost"]["gradient_steps"] == {"critic": 50, "actor": 30}
    check_acting(algo, umaze, tmp_path)


def test_the_paper_preset_takes_its_antmaze_settings():
    assert IQL.domain_overrides("paper", "antmaze") == {"expectile": 0.9, "temperature": 10.0}
    assert IQL.domain_overrides("cpu", "antmaze") == {} and IQL.domain_overrides("paper", "locomotion") == {}


@pytest.mark.parametrize("overrides,match", [
    ({"expectile": 1.0}, "expectile"), ({"expectile": 0.0}, "expectile"), ({"temperature": -1.0}, "temperature"),
    ({"max_weight": math.nan}, "max_weight"), ({"gamma": 2.0}, "gamma"), ({"critic_steps": -1}, "critic_steps"),
])
def test_bad_iql_config_values_are_one_clear_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny(**overrides)
