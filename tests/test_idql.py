"""IDQL: IQL's critic beside the shared behaviour model; selection among candidates (temperature 0 is the
behaviour model, a rising temperature picks higher advantages; greedy is the best candidate)."""

import pytest

from policies import registry
from policies.algorithms.idql import IDQL
from policies.errors import ConfigError

from .checks import check_selection


def tiny(**overrides):
    return registry.make_config("idql", "tiny", {"device": "cpu", **overrides})


def test_idql_picks_among_behaviour_candidates_by_the_iql_advantage(umaze, tmp_path):
    algo = IDQL.for_dataset(umaze, tiny(candidates=16, sampler={"steps": 6}))
    algo.fit(umaze, tmp_path)
    check_selection(algo, umaze, algo.critic.advantage,
                    lambda obs, g: algo.behaviour.sample(obs, 1, algo.config.sampler, generator=g).x[:, 0],
                    algo.critic.q_target, rule="softmax")


def test_greedy_takes_the_best_candidate_and_expectile_uses_the_expectile(umaze, tmp_path):
    import torch

    algo = IDQL.for_dataset(umaze, tiny(candidates=8))
    algo.fit(umaze, tmp_path)
    obs = umaze.transitions.observations[:50]
    algo.seed(0)
    greedy = torch.as_tensor(algo.act(obs.numpy(), rule="greedy"))
    algo.seed(0)  # the same candidates again
    candidates = algo.bounded(algo.behaviour.sample(obs, 8, algo.config.sampler, generator=algo._act_generator).x)
    best = algo.critic.advantage(obs, candidates).max(1).values
    assert torch.allclose(algo.critic.advantage(obs, greedy), best, atol=1e-5)
    with pytest.raises(ConfigError, match="tau in"):
        algo.act(obs.numpy(), rule="expectile", temperature=1.0)


def test_the_paper_preset_takes_iqls_antmaze_expectile():
    assert IDQL.domain_overrides("paper", "antmaze") == {"expectile": 0.9}
    assert IDQL.domain_overrides("paper", "locomotion") == {}


@pytest.mark.parametrize("overrides,match", [({"rule": "best"}, "rule"), ({"expectile": 1.0}, "expectile"),
                                             ({"candidates": 0}, "candidates")])
def test_bad_idql_config_values_are_one_clear_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny(**overrides)
