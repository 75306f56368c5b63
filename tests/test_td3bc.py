"""TD3+BC: with alpha = 0 it is behaviour cloning; end to end with acting, resume bit for bit, bad configs."""

import math

import pytest
import torch

from policies import registry
from policies.algorithms.bc import BC
from policies.algorithms.td3bc import TD3BC
from policies.errors import ConfigError

from .checks import check_acting


def tiny(**overrides):
    return registry.make_config("td3bc", "tiny", {"device": "cpu", **overrides})


def test_with_alpha_zero_the_actor_is_behaviour_clonings(umaze, tmp_path):
    """No Q term: the same network, initialisation and batches as bc.py's policy. BC's loss sums over action
    dimensions and TD3+BC's averages (the paper's): Adam's steps differ only through its epsilon."""
    common = {"hidden": 32, "layers": 2, "steps": 200, "batch": 64, "seed": 3, "device": "cpu"}
    bc = BC.for_dataset(umaze, registry.make_config("bc", "tiny", {**common, "lr": 1e-3}))
    bc.fit(umaze)
    td3 = TD3BC.for_dataset(umaze, tiny(**common, actor_lr=1e-3, alpha=0.0, policy_freq=1, normalize_states=False))
    td3.fit(umaze)
    obs = umaze.transitions.observations[:256].numpy()
    assert torch.allclose(torch.as_tensor(td3.act(obs)), torch.as_tensor(bc.act(obs)), atol=1e-4)
    moved = TD3BC.for_dataset(umaze, tiny(**common, actor_lr=1e-3, alpha=2.5, policy_freq=1, normalize_states=False))
    moved.fit(umaze)  # the Q term does move it
    assert not torch.allclose(torch.as_tensor(moved.act(obs)), torch.as_tensor(bc.act(obs)), atol=1e-3)


def test_td3bc_runs_end_to_end_and_acts_in_bounds(umaze, tmp_path):
    algo = TD3BC.for_dataset(umaze, tiny())
    record = algo.fit(umaze, tmp_path)
    assert record["cost"] == {"gradient_steps": {"policy": 50}, "gradient_steps_total": 50, "nfe_per_action": 1}
    assert torch.allclose(algo.norm.mean, umaze.transitions.observations.mean(0))
    check_acting(algo, umaze, tmp_path)


@pytest.mark.parametrize("overrides,match", [
    ({"alpha": -1.0}, "alpha"), ({"alpha": math.inf}, "alpha"), ({"gamma": 1.5}, "gamma"), ({"tau": -0.1}, "tau"),
    ({"policy_freq": 0}, "policy_freq"), ({"policy_noise": -0.2}, "policy_noise"), ({"actor_lr": 0.0}, "actor_lr"),
])
def test_bad_td3bc_config_values_are_one_clear_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny(**overrides)
