"""SfBC: the planned returns on hand-made episodes, selection among candidates (temperature 0 is the
behaviour model, a rising temperature picks higher Q), the shared stages, the official per-domain pick count."""

import math

import pytest
import torch

from policies import registry
from policies.algorithms.sfbc import SfBC, planned_returns
from policies.errors import ConfigError

from .checks import check_selection


def tiny(**overrides):
    return registry.make_config("sfbc", "tiny", {"device": "cpu", **overrides})


def test_planned_returns_are_monte_carlo_without_values_and_take_the_better_of_continuing_or_v():
    rewards, starts = torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0]), torch.tensor([0, 3, 5])
    mc = planned_returns(rewards, torch.full((5,), -math.inf), starts, 0.5)
    assert mc.tolist() == [1.75, 1.5, 1.0, 3.0, 2.0]  # each episode on its own: nothing flows across the boundary
    planned = planned_returns(rewards, torch.tensor([0.0, 5.0, 0.0, 0.0, 10.0]), starts, 0.5)
    assert planned.tolist() == [3.5, 5.0, 1.0, 7.0, 10.0]


def test_sfbc_picks_among_behaviour_candidates_by_its_returns_critic(umaze, tmp_path):
    algo = SfBC.for_dataset(umaze, tiny(candidates=16, sampler={"steps": 6}))
    algo.fit(umaze, tmp_path)
    check_selection(algo, umaze, algo.returns_value,
                    lambda obs, g: algo.behaviour.sample(obs, 1, algo.config.sampler, generator=g).x[:, 0],
                    algo.returns_q)


def test_sfbc_shares_qgpos_behaviour_and_support_stages(umaze, tmp_path):
    from policies.core.training import TrainHooks

    hooks = TrainHooks(shared_stages=tmp_path / "shared")
    qgpo = registry.get("qgpo")
    qgpo.for_dataset(umaze, registry.make_config("qgpo", "tiny", {"device": "cpu"})).fit(umaze, tmp_path / "q", hooks=hooks)
    record = SfBC.for_dataset(umaze, tiny()).fit(umaze, tmp_path / "s", hooks=hooks)
    assert record["resumed"] == ["behaviour", "support"]


def test_sfbcs_returns_network_is_read_as_a_critic_in_return_units_and_keeps_its_scale_across_a_restore(umaze, tmp_path):
    """The harness's critic check reads SfBC's Q_phi beside the data's returns (issue 40): after round 0 alone it
    is a regression onto the Monte-Carlo returns, so in return units it must match them in mean and rank; read
    in normalised units (a missing or stale scale) its mean would be near 0, far from returns of order 1."""

    config = tiny(rounds=1, round_steps=600, returns_batch=256, plan_gamma=0.9)
    algo = SfBC.for_dataset(umaze, config)
    algo.fit(umaze, tmp_path)
    t = umaze.transitions
    mc = planned_returns(t.rewards, torch.full_like(t.rewards, -math.inf), t.return_streams(algo.config.continuing), 0.9)
    with torch.no_grad():
        q = algo.q_function()(t.observations, t.actions)
    assert algo.critic_discount() == 0.9
    assert abs(q.mean() - mc.mean()) < 0.1 * mc.std(), (q.mean(), mc.mean(), mc.std())
    assert torch.corrcoef(torch.stack([q, mc]))[0, 1] > 0.8
    again = SfBC.for_dataset(umaze, config)
    record = again.fit(umaze, tmp_path)
    assert "returns" in record["resumed"]
    with torch.no_grad():
        assert torch.allclose(again.q_function()(t.observations, t.actions), q)


def test_the_paper_preset_takes_the_official_per_domain_settings():
    assert SfBC.domain_overrides("paper", "locomotion") == {"keep": 4}
    assert SfBC.domain_overrides("paper", "antmaze") == {"round_steps": 48_800}
    assert SfBC.domain_overrides("cpu", "locomotion") == {}
    for preset in ("paper", "cpu"):  # the maze data's continuing stream is a property of the data, not a preset
        assert SfBC.domain_overrides(preset, "pointmaze") == SfBC.domain_overrides(preset, "maze2d") == {"continuing": True}


def test_returns_flow_across_goal_arrival_cuts_of_a_continuing_stream_but_never_past_a_terminal():
    from envs.transitions import Transitions

    # episodes [0, 2) cut at a goal reached, [2, 4) terminated, [4, 6) cut, [6, 7) the data's end
    n, timeouts, terminals = 7, torch.tensor([0, 1, 0, 0, 0, 1, 1.0]), torch.tensor([0, 0, 0, 1, 0, 0, 0.0])
    t = Transitions(observations=torch.zeros(n, 1), actions=torch.zeros(n, 1), rewards=torch.ones(n),
                    next_observations=torch.zeros(n, 1), terminals=terminals, timeouts=timeouts,
                    episode_starts=torch.tensor([0, 2, 4, 6, 7]))
    assert t.return_streams().tolist() == [0, 2, 4, 6, 7]
    assert t.return_streams(across_truncations=True).tolist() == [0, 4, 7]
    mc = planned_returns(t.rewards, torch.full((n,), -math.inf), t.return_streams(True), 0.5)
    assert mc.tolist() == [1.875, 1.75, 1.5, 1.0, 1.75, 1.5, 1.0]


def test_on_maze_data_the_returns_stage_runs_over_the_continuing_stream():
    from bench.harness.runner import RunSpec

    cfg = RunSpec(algorithm="sfbc", dataset="diffbench/pointmaze/umaze-dense-small-v0", preset="cpu", seed=0).config()
    assert cfg.continuing and "continuing" in SfBC.stage_fields["returns"]


@pytest.mark.parametrize("overrides,match", [({"keep": 5}, "keep"), ({"rounds": 0}, "rounds"),
                                             ({"plan_gamma": 1.5}, "plan_gamma"), ({"temperature": -1.0}, "temperature")])
def test_bad_sfbc_config_values_are_one_clear_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny(**overrides)
