"""QGPO: its losses, stages, checkpoints and errors, and one end-to-end run on a tiny PointMaze."""

import dataclasses

import numpy as np
import pytest
import torch

from bench.harness.evaluation import AtScale, evaluate, evaluate_scales
from envs.catalog import load_dataset
from policies import registry
from policies.core.checkpoint import save_checkpoint
from policies.errors import CheckpointError, ConfigError
from policies.core.networks import EnergyNet, ScoreNet
from policies.algorithms.qgpo import QGPO, QGPOConfig, cep_loss, in_support_value, successor_index
from policies.core.schedule import VPSchedule

from .checks import assert_beats_random, cut_and_resume, same_checkpoints


def test_energy_gradient_is_the_autograd_gradient():
    torch.manual_seed(0)
    net = EnergyNet(3, 5, hidden=16, layers=4)
    a, s = torch.randn(7, 3, requires_grad=True), torch.randn(7, 5)
    (auto,) = torch.autograd.grad(net(a, torch.full((7,), 0.3), s).sum(), a)
    assert torch.allclose(net.action_grad(a.detach(), 0.3, net.condition(s)), auto, atol=1e-6)


def test_score_net_state_split_matches_full_forward():
    torch.manual_seed(0)
    net = ScoreNet(2, 4, widths=(32, 16, 8))
    x, s = torch.randn(6, 2), torch.randn(6, 4)
    t = torch.full((6,), 0.4)
    assert torch.allclose(net(x, t, s), net.eps(x, 0.4, net.condition(s)), atol=1e-6)


def test_in_support_value_interpolates_mean_and_max():
    q = torch.tensor([[1.0, 2.0, 4.0]])
    assert torch.allclose(in_support_value(q, 0.0), q.mean(-1))
    assert torch.allclose(in_support_value(q, 100.0), q.max(-1).values)


def test_cep_loss_is_minimal_at_the_true_energy():
    """At t -> 0 the intermediate energy is beta Q itself; CEP's loss there is the target's entropy."""
    class Exact(torch.nn.Module):
        def forward(self, a, t, s):
            return 2.0 * a[..., 0]

    class Shifted(Exact):
        def forward(self, a, t, s):
            return super().forward(a, t, s) + a[..., 1]

    sched = VPSchedule(beta_min=1e-6, beta_max=1e-5)  # sigma_t ~ 0: no noise at any t
    support = torch.randn(64, 8, 2, generator=torch.Generator().manual_seed(0))
    q = support[..., 0]
    exact = cep_loss(Exact(), sched, torch.zeros(64, 0), support, q, 2.0)
    entropy = -(torch.softmax(2 * q, -1) * torch.log_softmax(2 * q, -1)).sum(-1).mean()
    assert torch.allclose(exact, entropy, atol=1e-3)
    assert cep_loss(Shifted(), sched, torch.zeros(64, 0), support, q, 2.0) > exact


def test_successor_index_shares_next_states_with_the_following_row():
    obs = torch.tensor([[0.0], [1.0], [2.0], [10.0], [11.0]])
    nxt = torch.tensor([[1.0], [2.0], [3.0], [11.0], [12.0]])  # episodes [0, 1, 2] and [3, 4]
    index, extra = successor_index(obs, nxt)
    assert extra.tolist() == [[3.0], [12.0]]
    assert torch.equal(torch.cat([obs, extra])[index], nxt)


@pytest.mark.parametrize("field,value,match", [("guidance_scale", -1.0, "guidance_scale"), ("energy_loss", "kl", "energy_loss"),
                                               ("tau", 0.0, "tau"), ("behaviour_lr", 0.0, "behaviour_lr"),
                                               ("q_batch", 0, "q_batch"), ("acting", "fast", "acting")])
def test_bad_config_values_are_one_clear_error(field, value, match):
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(QGPOConfig(), **{field: value})


def test_unknown_names_are_one_clear_error():
    with pytest.raises(ConfigError, match="unknown algorithm 'qgpx'; known: bc, ctrl, dac, ddpo, diffusion_ql, dxmi, fql, idql, iql, qgpo, sfbc, srpo, td3bc"):
        registry.get("qgpx")
    with pytest.raises(ConfigError, match="unknown preset 'fast'"):
        registry.make_config("qgpo", "fast")
    with pytest.raises(ConfigError, match="unknown config key 'guidance'; known keys: .*guidance_scale"):
        registry.make_config("qgpo", "tiny", guidance=2.0)
    with pytest.raises(ConfigError, match="unknown config key 'sampler.stepz'; known keys of sampler: .*steps"):
        registry.make_config("qgpo", "tiny", {"sampler.stepz": 3})
    with pytest.raises(ConfigError, match="beta must be a number, got 'high'"):
        registry.make_config("qgpo", "tiny", {"beta": "high"})


def test_presets_round_trip_through_dicts():
    for preset in QGPO.presets.values():
        assert QGPOConfig.from_dict(preset.to_dict()) == preset


@pytest.fixture(scope="module")
def trained(tiny_pointmaze, tmp_path_factory, session_root):
    """QGPO's four stages on the tiny dataset (tiny preset), checkpointed to a run directory."""
    from envs.minari_source import pinned_root

    with pinned_root(session_root):
        ds = load_dataset(tiny_pointmaze)
    config = registry.make_config("qgpo", "tiny", device="cpu")
    algo = QGPO.for_dataset(ds, config)
    workdir = tmp_path_factory.mktemp("qgpo-run")
    record = algo.fit(ds, workdir)
    return ds, algo, workdir, record


def test_end_to_end_every_stage_runs_and_evaluates(trained):
    ds, algo, workdir, record = trained
    assert set(record["stages"]) == {"behaviour", "support", "critic", "energy"} and not record["resumed"]
    assert sorted(p.name for p in workdir.glob("*.pt")) == ["behaviour.pt", "critic.pt", "energy.pt", "support.pt"]
    for stage in ("behaviour", "critic", "energy"):
        assert np.isfinite(record["stages"][stage]["final_loss"])
    assert record["cost"]["gradient_steps_total"] == 150 and record["cost"]["nfe_per_action"] == 4
    fit = record["stages"]["energy"]["check"]["fit_by_time"]  # f_phi's fit read near t = 0 and later
    assert [f["t"] for f in fit] == [0.01, 0.1, 0.3] and all(-1 <= f["rank_correlation"] <= 1 for f in fit)
    result = evaluate(algo, ds, episodes=3, seed=0, max_steps=20)
    assert result.policy_calls == 20 and result.returns.shape == (3,) and result.normalized is not None
    again = evaluate(algo, ds, episodes=3, seed=0, max_steps=20)
    assert np.array_equal(result.returns, again.returns)  # seeded env and sampling noise


def test_the_guidance_probe_reads_a_finished_run_off_its_checkpoints(trained, session_root):
    """bench/studies/guidance_probe.py: each scale's actions from the same noise, their Q_0, and f_phi's fit."""
    from bench.studies.guidance_probe import probe
    from envs.minari_source import pinned_root
    from policies.core.critics import probe_index, q_values

    ds, algo, workdir, _ = trained
    with pinned_root(session_root):
        table = probe(workdir, (0.0, 2.0), states=64).set_index("actions")
    assert table.index.tolist() == ["s = 0", "s = 2", "data"]
    assert table.loc["s = 0", "shift from s = 0 (L2)"] == 0.0 and table.loc["s = 2", "shift from s = 0 (L2)"] > 0
    rows = probe_index(len(ds.transitions.observations), 64, 0)
    data_q = q_values(algo.q_target, ds.transitions.observations[rows], ds.transitions.actions[rows]).mean()
    assert table.loc["data", "Q_0"] == pytest.approx(float(data_q), rel=1e-5)  # the run's own critic, restored
    assert [f["t"] for f in table.attrs["fit_by_time"]] == [0.01, 0.1, 0.3]


def test_actions_are_batched_and_inside_the_bounds(trained):
    ds, algo, _, _ = trained
    obs = ds.transitions.observations[:32].numpy()
    for scale in (0.0, 1.0, 10.0):
        a = algo.act(obs, guidance_scale=scale)
        assert a.shape == (32, 2) and np.all(a >= -1) and np.all(a <= 1)
    with pytest.raises(ConfigError, match="guidance scale must be >= 0"):
        algo.act(obs, guidance_scale=-0.5)
    with pytest.raises(ConfigError, match=r"shape \(batch, 8\)"):
        algo.act(obs[:, :5])


def test_resume_skips_finished_stages_and_reruns_changed_ones(trained):
    ds, algo, workdir, _ = trained
    same = QGPO.for_dataset(ds, algo.config)
    assert same.fit(ds, workdir)["resumed"] == ["behaviour", "critic", "energy", "support"]
    changed = QGPO.for_dataset(ds, dataclasses.replace(algo.config, behaviour_steps=60))
    with pytest.raises(CheckpointError, match="behaviour_steps differ"):
        changed.fit(ds, workdir)


def test_load_restores_the_same_policy(trained):
    ds, algo, workdir, _ = trained
    loaded = QGPO.load(workdir, ds, device="cpu")
    obs = ds.transitions.observations[:16].numpy()
    algo.seed(3)
    loaded.seed(3)
    assert np.allclose(algo.act(obs), loaded.act(obs), atol=1e-6)


def test_checkpoint_errors(trained, tmp_path):
    ds, algo, workdir, _ = trained
    with pytest.raises(CheckpointError, match="no trained qgpo policy"):
        QGPO.load(tmp_path, ds)
    for name in ("behaviour.pt", "energy.pt"):
        (tmp_path / name).write_bytes((workdir / name).read_bytes()[:100])  # truncated
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        QGPO.load(tmp_path, ds)
    save_checkpoint(tmp_path / "energy.pt", algorithm="ddpo", stage="energy", dims=algo.dims, payload={})
    with pytest.raises(CheckpointError, match="algorithm 'ddpo', not 'qgpo'"):
        QGPO.load(tmp_path, ds)
    other = dataclasses.replace(ds, transitions=dataclasses.replace(ds.transitions, actions=torch.zeros(len(ds.transitions), 3)))
    with pytest.raises(CheckpointError, match="action dim 2; .* has 8 and 3"):
        QGPO.load(workdir, other)


def test_act_differs_between_guidance_scales_with_the_same_noise(trained):
    ds, algo, _, _ = trained
    obs = ds.transitions.observations[:64].numpy()
    algo.seed(7)
    plain = algo.act(obs, guidance_scale=0.0)
    algo.seed(7)
    again = algo.act(obs, guidance_scale=0.0)
    algo.seed(7)
    guided = algo.act(obs, guidance_scale=5.0)
    assert np.array_equal(plain, again) and np.abs(guided - plain).mean() > 1e-3


def test_a_trained_qgpo_beats_a_random_policy_on_the_tiny_maze(umaze):
    """Regression on a tiny dataset: a policy that learned nothing scores like the random reference."""
    ds = umaze
    config = registry.make_config("qgpo", "tiny", {"device": "cpu", "score_widths": [64, 32, 16], "behaviour_steps": 1500,
                                                   "behaviour_batch": 256, "behaviour_lr": 1e-3, "q_steps": 300,
                                                   "energy_steps": 300, "sampler.steps": 6})
    algo = QGPO.for_dataset(ds, config)
    algo.fit(ds)
    assert_beats_random(algo, ds)


def test_the_critic_bootstraps_through_timeouts_and_not_through_terminals():
    """Two one-state chains with reward 1 per step, gamma 0.5: state 0 ends by termination after one step,
    so Q = 1; state 1 loops on itself and is only ever cut by timeouts, so Q = 1 / (1 - gamma) = 2."""
    from policies.core.networks import TwinQ
    from policies.algorithms.qgpo import successor_index, train_critic
    from policies.core.training import make_generator

    n = 64
    obs = torch.tensor([[0.0]] * (n // 2) + [[1.0]] * (n // 2))
    terminals = torch.tensor([1.0] * (n // 2) + [0.0] * (n // 2))  # state 1's steps are timeouts: no terminal
    index, extra = successor_index(obs, obs.clone())  # every successor is the same state (an absorbing loop)
    data = {"observations": obs, "actions": torch.zeros(n, 1), "rewards": torch.ones(n), "terminals": terminals,
            "all_states": torch.cat([obs, extra])}
    support = torch.zeros(len(data["all_states"]), 4, 1)
    cfg = registry.make_config("qgpo", "tiny", {"q_steps": 3000, "q_batch": 32, "q_lr": 3e-3, "gamma": 0.5,
                                               "tau": 0.05, "q_hidden": 32})
    torch.manual_seed(0)
    q = TwinQ(1, 1, 32, 2)
    q_target, _ = train_critic(q, data, support, index, cfg, make_generator(0, torch.device("cpu")))
    values = q_target(torch.tensor([[0.0], [1.0]]), torch.zeros(2, 1))
    assert values[0].item() == pytest.approx(1.0, abs=0.05) and values[1].item() == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize("rewards,gamma,bounds", [([0.5, 2.0], 0.5, (0.5, 4.0)), ([-1.0, -0.2], 0.5, (-2.0, -0.2)),
                                                   ([-1.0, 3.0], 0.9, (-10.0, 30.0)), ([0.0, 1.0], 1.0, (0.0, float("inf")))])
def test_value_bounds_are_the_discounted_returns_the_rewards_allow(rewards, gamma, bounds):
    from policies.algorithms.pretrain import value_bounds

    assert value_bounds(torch.tensor(rewards), gamma) == pytest.approx(bounds)


def _constant_critic(obs_dim: int, act_dim: int, value: float):
    from policies.core.networks import TwinQ

    q = TwinQ(act_dim, obs_dim, 8, 2)
    for net in (q.q1, q.q2):
        last = [m for m in net.modules() if isinstance(m, torch.nn.Linear)][-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.constant_(last.bias, value)
    return q


def test_the_critic_check_flags_a_critic_outside_what_the_rewards_allow(trained):
    """A constant Q inside [lo, hi] passes; twice the upper bound is flagged, on every probed state."""
    from policies.algorithms.pretrain import critic_check, value_bounds

    ds, algo, _, record = trained
    t = ds.transitions
    lo, hi = value_bounds(t.rewards, algo.config.gamma)
    inside = critic_check(_constant_critic(t.obs_dim, t.action_dim, (lo + hi) / 2), t, algo.config.gamma, probe=64,
                          continuing=True)
    outside = critic_check(_constant_critic(t.obs_dim, t.action_dim, 2 * hi + 1), t, algo.config.gamma, probe=64,
                           continuing=True)
    assert not inside["outside_bounds"] and inside["outside_fraction"] == 0 and inside["probe_states"] == 64
    assert outside["outside_bounds"] and outside["outside_fraction"] == 1.0
    assert inside["mc_correlation"] is None  # a constant ranks nothing
    mc = t.discounted_returns_to_go(algo.config.gamma, across_truncations=True)  # the maze's one stream
    eligible = (t.unseen_tail(algo.config.gamma, across_truncations=True) <= 0.01).nonzero().squeeze(1)
    assert 0 < len(eligible) < len(mc)  # the stream's last steps, cut by the data's end, are left out
    drawn = eligible[torch.randperm(len(eligible), generator=torch.Generator().manual_seed(0))[:64]]
    assert outside["mc_return_mean"] == pytest.approx(float(mc[drawn].mean()))
    # the run's own check, made when the critic stage trained and kept in its checkpoint's record: a maze's data is
    # one continuing stream, so its returns run on across the goals reached
    check = record["stages"]["critic"]["check"]
    assert check["value_bounds"] == pytest.approx([lo, hi]) and isinstance(check["outside_bounds"], bool)
    assert check["returns"].startswith("continuing streams")


def test_the_critic_checks_returns_follow_the_familys_streams_and_leave_truncated_tails_out():
    """Episode A (3 steps) is cut by a time limit, B (2 steps) terminates; gamma 0.5, so a return misses less than
    1% of its discount weight only 7 or more steps before a cut. Per episode, A's rows all lie within 7 steps of
    their cut: only B's are read. As one continuing stream (a maze's), A runs on into B and every row is exact."""
    from envs.transitions import Transitions
    from policies.algorithms.pretrain import mc_probe

    t = Transitions.from_arrays(observations=np.arange(5.0)[:, None], actions=np.zeros((5, 1)),
                                rewards=np.array([1.0, 1.0, 1.0, 2.0, 2.0]), next_observations=np.arange(1.0, 6.0)[:, None],
                                terminals=np.array([0, 0, 0, 0, 1]), timeouts=np.array([0, 0, 1, 0, 0]),
                                episode_starts=np.array([0, 3, 5]))
    assert t.unseen_tail(0.5).tolist() == [0.125, 0.25, 0.5, 0.0, 0.0]
    idx, mc, convention = mc_probe(t, 0.5)
    assert sorted(idx.tolist()) == [3, 4] and sorted(mc.tolist()) == [2.0, 3.0] and convention.startswith("episodes")
    idx, mc, convention = mc_probe(t, 0.5, continuing=True)
    assert sorted(idx.tolist()) == [0, 1, 2, 3, 4] and convention.startswith("continuing streams")
    assert t.discounted_returns_to_go(0.5, across_truncations=True).tolist() == [2.125, 2.25, 2.5, 3.0, 2.0]


def test_the_guidance_check_tells_a_target_with_nothing_to_learn_from_one_f_phi_did_not_learn():
    from policies.algorithms.qgpo import guidance_check

    flat = guidance_check(torch.full((16, 8), 5.0), beta=3.0, energy_loss=np.log(8))
    assert flat["near_uniform"] and flat["target_entropy"] == pytest.approx(np.log(8)) and flat["learned"] is None
    sharp_q = torch.zeros(16, 8)
    sharp_q[:, 0] = 4.0  # beta Q_0 = 12 apart: the target all but names one action
    unlearned = guidance_check(sharp_q, beta=3.0, energy_loss=np.log(8))
    assert not unlearned["near_uniform"] and unlearned["target_entropy"] < 0.01
    assert unlearned["learned"] == pytest.approx(0.0) and unlearned["beta_q_spread_median"] == pytest.approx(12.0)
    exact = guidance_check(sharp_q, beta=3.0, energy_loss=unlearned["target_entropy"])
    assert exact["learned"] == pytest.approx(1.0)


def test_f_phis_fit_read_near_t_0_tells_an_energy_that_ranks_the_support_as_q_does_from_one_that_does_not():
    """With Q_0 linear in the action, f_phi = beta Q_0(a_t) is the CEP optimum as t -> 0: near t = 0 it ranks each
    state's support as Q_0 does (correlation ~1) at the target's entropy; later times blur it; a flat f_phi ranks
    nothing (loss log M); a reversed one ranks against Q_0."""
    from policies.algorithms.qgpo import energy_fit_by_time
    from policies.core.schedule import VPSchedule

    w = torch.tensor([1.0, -2.0])
    support = torch.randn(256, 8, 2, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    q, states = support @ w, torch.zeros(256, 3)
    target = torch.softmax(3.0 * q, -1)
    entropy = float(-(target * target.log()).sum(-1).mean())
    exact, late = energy_fit_by_time(lambda x, t, s: 3.0 * (x @ w), VPSchedule(), states, support, q, 3.0,
                                     times=(0.01, 0.9))
    assert exact["rank_correlation"] > 0.99 and exact["loss"] == pytest.approx(entropy, abs=0.05)
    assert late["rank_correlation"] < 0.8 and late["loss"] > exact["loss"] + 0.1
    flat, = energy_fit_by_time(lambda x, t, s: torch.zeros(x.shape[:-1]), VPSchedule(), states, support, q, 3.0,
                               times=(0.01,))
    assert flat["rank_correlation"] == 0.0 and flat["loss"] == pytest.approx(np.log(8)) and flat["f_spread"] == 0.0
    reversed_, = energy_fit_by_time(lambda x, t, s: -3.0 * (x @ w), VPSchedule(), states, support, q, 3.0,
                                    times=(0.01,))
    assert reversed_["rank_correlation"] < -0.99


@pytest.mark.parametrize("interleave,stage", [(False, "critic"), (False, "energy"), (True, "critic"), (True, "energy")])
def test_a_run_cut_mid_critic_or_energy_resumes_bit_for_bit(umaze, tmp_path, interleave, stage):
    """The resumed run must equal an uninterrupted one to the bit, f_phi's optimizer state included when it
    trains alongside Q_0."""
    config = registry.make_config("qgpo", "tiny", {"device": "cpu", "q_steps": 40, "energy_steps": 60,
                                                   "energy_batch": 32, "interleave": interleave})
    cut_and_resume(QGPO, config, umaze, tmp_path, stage)
    assert same_checkpoints(tmp_path, "critic", ("q", "q_target")) and same_checkpoints(tmp_path, "energy", ("energy",))


def test_acting_paths_give_the_same_actions(trained):
    """The lean path (the default) and the plain sampler draw the same actions from the same noise."""
    ds, algo, _, _ = trained
    obs = ds.transitions.observations[:16].numpy()
    plain = QGPO.for_dataset(ds, dataclasses.replace(algo.config, acting="plain"))
    plain.behaviour.load_state_dict(algo.behaviour.state_dict())
    plain.energy.load_state_dict(algo.energy.state_dict())
    assert algo.config.acting == "lean"
    for scale in (0.0, 1.0, 4.0):
        algo.seed(2)
        plain.seed(2)
        assert np.abs(algo.act(obs, guidance_scale=scale) - plain.act(obs, guidance_scale=scale)).max() < 1e-5


@pytest.mark.parametrize("acting", ["lean", "plain"])
def test_scales_evaluated_together_are_each_scale_evaluated_alone(trained, acting):
    """One K x N evaluation gives each scale the env seeds and sampling noise of its own evaluation."""
    ds, algo, _, _ = trained
    policy = QGPO.for_dataset(ds, dataclasses.replace(algo.config, acting=acting))
    policy.behaviour.load_state_dict(algo.behaviour.state_dict())
    policy.energy.load_state_dict(algo.energy.state_dict())
    scales = [0.0, 1.0, 4.0]
    together = evaluate_scales(policy, ds, scales, episodes=3, seed=4, max_steps=30)
    for scale, res in zip(scales, together):
        alone = evaluate(AtScale(policy, scale), ds, episodes=3, seed=4, max_steps=30)
        assert np.allclose(res.returns, alone.returns, rtol=1e-5, atol=1e-5)
        assert np.array_equal(res.lengths, alone.lengths)
    assert together[0].policy_calls == 30 and together[0].episodes_per_second > 0
    with pytest.raises(ConfigError, match="one equal block per guidance scale"):
        policy.act(ds.transitions.observations[:4].numpy(), guidance_scale=scales)


def test_the_mean_action_probe_reproduces_the_runs_own_acting_and_averages_its_draws(trained, session_root, tmp_path):
    """bench/studies/mean_action.py: one draw is the run's own acting on the final evaluation's seeds (its s = 0
    score, to the digit); K draws act with their mean."""
    import json
    import shutil

    from bench.harness.evaluation import AtScale
    from bench.studies.mean_action import MeanOf, probe
    from envs.minari_source import pinned_root

    ds, algo, workdir, _ = trained
    obs = ds.transitions.observations[:4].numpy()
    algo.seed(3)
    draws = algo.act(np.repeat(obs, 5, axis=0), guidance_scale=0.0).reshape(4, 5, -1)
    mean = MeanOf(algo, 5, 0.0)
    mean.seed(3)
    assert np.allclose(mean.act(obs), draws.mean(axis=1))
    run = tmp_path / "qgpo" / "data" / "run"
    shutil.copytree(workdir, run)
    (run / "config.json").write_text(json.dumps({"spec": f"qgpo {ds.id} seed 0 (tiny)",
                                                 "protocol": {"episodes": 2, "eval_seed": 5}}))
    with pinned_root(session_root):
        table = probe(run, (1, 3)).set_index("draws averaged")
        own = evaluate(AtScale(algo, 0.0), ds, episodes=2, seed=5)
    assert table.loc[1, "score"] == pytest.approx(float(own.normalized.mean()))
    assert table.loc[3, "episodes"] == 2 and np.isfinite(table.loc[3, "score"])


def test_the_mean_action_probe_changes_only_settings_that_act():
    from bench.studies.mean_action import with_acting

    algo = registry.get("idql")(registry.make_config("idql", "tiny", device="cpu"), 3, 2, -np.ones(2), np.ones(2), "cpu")
    assert with_acting(algo, {"candidates": "1"}).config.candidates == 1
    with pytest.raises(ValueError, match="training setting"):
        with_acting(algo, {"behaviour_steps": "5"})
    with pytest.raises(ValueError, match="no setting 'candidate'"):
        with_acting(algo, {"candidate": "5"})
