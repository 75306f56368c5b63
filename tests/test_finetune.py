"""The fine-tuning core and DDPO: the chain, log-densities and KLs summed over dimensions, the closed-form
optimum of the KL-regularised objective, beta = 0 identity, bad inputs, resume and stage sharing."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from policies import registry
from policies.algorithms.ddpo import DDPO, DDPOConfig, ddpo_advantages, ddpo_loss, train_ddpo
from policies.core.diffusion import DiffusionModel
from policies.errors import CheckpointError, ConfigError
from policies.algorithms.finetune import (Chain, FinetunedPolicy, gaussian_log_density, group_advantages, returns_to_go,
                               step_kl)
from policies.core.samplers import ddim, ddim_transition, sde_transition
from policies.core.schedule import VPSchedule
from policies.core.training import TrainHooks

from .checks import check_acting, cut_and_resume, first_action_bandit, same_checkpoints
from .gaussian_chain import exact_gradients, sloped_policy


# ---------------------------------------------------------------- the chain

@pytest.mark.parametrize("kind,grid", [("ddim", "uniform"), ("ddim", "quadratic"), ("sde", "uniform"), ("sde", "quadratic")])
def test_chain_steps_are_the_samplers_transitions(kind, grid):
    chain, sched = Chain(kind, 7, grid), VPSchedule()
    ts, table = chain.coefficients(sched)
    assert ts[0] == 1.0 and ts[-1] == pytest.approx(1e-3) and all(a > b for a, b in zip(ts, ts[1:]))
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    for k, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        mean, std = (ddim_transition(eps, x, t, s, sched, 1.0) if kind == "ddim" else sde_transition(eps, x, t, s, sched))
        a, b, sd = table[k].tolist()
        assert torch.allclose(a * x + b * eps, mean, atol=1e-12) and sd == pytest.approx(std) and sd > 0


def test_the_untrained_policy_is_the_pretrained_ddim_chain_draw_for_draw():
    torch.manual_seed(0)
    model = DiffusionModel(2, 3, widths=(16, 8, 4))
    states = torch.randn(6, 3)
    policy = FinetunedPolicy(model, Chain("ddim", 5, "uniform"))
    ours = policy.sample(states, torch.Generator().manual_seed(1))
    eps = model.noise_fn(states)
    x = torch.randn((6, 2), generator=(g := torch.Generator().manual_seed(1)))
    theirs = ddim(eps, x, model.schedule, steps=5, eta=1.0, generator=g).x
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_log_densities_and_kls_are_summed_over_action_dimensions():
    g = torch.Generator().manual_seed(0)
    x, m1, m2 = (torch.randn(8, 4, generator=g) for _ in range(3))
    std = torch.full((8,), 0.3)
    ref = torch.distributions.Normal(m1, 0.3)
    assert torch.allclose(gaussian_log_density(x, m1, std), ref.log_prob(x).sum(-1), atol=1e-5)
    kl = torch.distributions.kl_divergence(ref, torch.distributions.Normal(m2, 0.3)).sum(-1)
    assert torch.allclose(step_kl(m1, m2, std), kl, atol=1e-5)
    # the same shift in every dimension: the KL grows with the dimension (an average would not)
    shift = torch.full((8, 4), 0.1)
    assert torch.allclose(step_kl(m1 + shift, m1, std), 4 * step_kl(m1[:, :1] + 0.1, m1[:, :1], std))


def test_returns_to_go_charge_each_choice_the_later_kls():
    class T:
        kl = torch.tensor([[1.0], [2.0], [4.0]])
    g = returns_to_go(T(), torch.tensor([10.0]), beta=2.0)
    assert g[:, 0].tolist() == [20.0 - 6.0, 20.0 - 4.0, 20.0]


def test_advantages_compare_each_chain_with_the_others_of_its_state_and_share_one_scale():
    returns = torch.tensor([[1.0, 3.0, 10.0, 14.0, 20.0, 26.0]])
    adv, scale = group_advantages(returns, group=3)
    raw = torch.tensor([1 - 6.5, 3 - 5.5, 10 - 2.0, 14 - 23.0, 20 - 20.0, 26 - 17.0])  # minus the others' mean
    assert scale == pytest.approx(float(raw.std())) and torch.allclose(adv[0], raw / scale)
    with pytest.raises(ConfigError, match=">= 2"):
        group_advantages(returns, group=1)


# ---------------------------------------------------------------- the estimator against the objective in closed form

SLOPED = dict(offsets=[0.3, -0.2, 0.4, 0.2], slopes=[0.2, -0.3, 0.25, 0.3])  # each step's KL depends on x_k


def ddpo_gradient(policy, cfg, chains, seed, reward=lambda a: a[:, 0]):
    """One batch's DDPO loss gradient times the scale that divided it: an estimate of -grad(beta E[r] - KL)."""
    traj = policy.rollout(torch.zeros(chains // cfg.samples_per_state, 0), cfg.samples_per_state,
                          torch.Generator().manual_seed(seed))
    adv, scale = ddpo_advantages(traj, reward(traj.actions), cfg, list(policy.trained_steps))
    log_probs, kl = policy.rescore(traj, torch.arange(chains))
    loss = ddpo_loss(log_probs, traj.log_probs[list(policy.trained_steps)], adv, kl, scale, cfg.estimator,
                     cfg.clip_range)
    net = policy.model.net
    return torch.cat([g * scale for g in torch.autograd.grad(loss, [net.offset, net.slope])]).double()


@pytest.mark.parametrize("group", [2, 4])
def test_ddpos_mean_gradient_is_the_kl_regularised_objectives_at_small_groups(group):
    """On a chain whose steps' KLs depend on the state (so the later KLs are part of each choice's return), the
    estimator's mean over batches matches the exact gradient of beta E[a] - KL: it fails with the later KLs
    left out of the returns (off by ~1,000 standard errors) and with a group mean that includes the chain
    itself (~100: the reward's part shrinks by 1 - 1/G)."""
    policy = sloped_policy(Chain("sde", 4), **SLOPED)
    cfg = DDPOConfig(beta=2.0, samples_per_state=group, states_per_iteration=64, adv_clip=1e9, interleave=False)
    estimates = torch.stack([ddpo_gradient(policy, cfg, 20_000, seed) for seed in range(10)])
    exact = torch.cat(exact_gradients(policy, lambda mean_a, kl: -(cfg.beta * mean_a - kl)))
    z = (estimates.mean(0) - exact) / (estimates.std(0) / math.sqrt(len(estimates)))
    assert z.abs().max() < 4.5, (estimates.mean(0), exact, z)


def test_a_steps_return_holds_only_what_its_choice_changes():
    """No reward and only the last step trained: nothing that step draws changes any later KL, so its
    policy-gradient term is exactly zero and the gradient is the KL's own (a step's KL counted in its own
    return would add noise there)."""
    chain = Chain("sde", 4)
    policy = sloped_policy(chain, **SLOPED)
    policy.first_trained = chain.steps - 1
    cfg = DDPOConfig(beta=2.0, samples_per_state=4, states_per_iteration=64, interleave=False)
    got = ddpo_gradient(policy, cfg, 4096, 0, reward=lambda a: torch.zeros(a.shape[0]))
    traj = policy.rollout(torch.zeros(1024, 0), 4, torch.Generator().manual_seed(0))
    _, kl = policy.rescore(traj, torch.arange(4096))
    net = policy.model.net
    direct = torch.cat(torch.autograd.grad(kl.sum(0).mean(), [net.offset, net.slope])).double()
    assert torch.allclose(got, direct, atol=1e-6), (got, direct)


@pytest.mark.parametrize("estimator", ["ppo", "score"])
def test_ppo_clips_only_the_side_that_would_move_the_ratio_further(estimator):
    """PPO's pessimistic bound: with A > 0 a ratio already above 1 + eps gets no gradient, one below 1 - eps
    keeps it; with A < 0 the reverse. The score estimator keeps every chain's gradient, importance-weighted."""
    ratios = torch.tensor([[0.5, 1.0, 1.5, 0.5, 1.0, 1.5]])
    adv = torch.tensor([[1.0, 1.0, 1.0, -1.0, -1.0, -1.0]])
    log_probs = ratios.log().requires_grad_(True)
    loss = ddpo_loss(log_probs, torch.zeros_like(log_probs), adv, torch.zeros_like(adv), 1.0, estimator, 0.2)
    (grad,) = torch.autograd.grad(loss, log_probs)
    kept = (torch.tensor([True, True, False, False, True, True]) if estimator == "ppo" else torch.ones(6, dtype=bool))
    expected = torch.where(kept, -ratios * adv / 6, torch.zeros(()))
    assert torch.allclose(grad, expected[None] if expected.dim() == 1 else expected, atol=1e-7), grad


# ---------------------------------------------------------------- the optimum in closed form

class GaussianNoise(nn.Module):
    """The exact noise predictor of N(m, v) data, plus a learnable offset per chain time: a family
    holding the optimum of the KL-regularised objective for a linear reward exactly."""

    def __init__(self, m: float, v: float, schedule: VPSchedule, times: list[float]):
        super().__init__()
        self.m, self.v, self.schedule = m, v, schedule
        self.register_buffer("times", torch.tensor(times, dtype=torch.float32))
        self.offset = nn.Parameter(torch.zeros(len(times)))

    def forward(self, x, t: float, states):
        al, sg = self.schedule.alpha_sigma(float(t))
        eps = sg * (x - al * self.m) / (al**2 * self.v + sg**2)
        return eps + self.offset[int((self.times - t).abs().argmin())]


class GaussianModel(nn.Module):
    def __init__(self, m: float, v: float, chain: Chain):
        super().__init__()
        self.schedule, self.action_dim = VPSchedule(), 1
        self.net = GaussianNoise(m, v, self.schedule, chain.coefficients(self.schedule)[0][:-1])


def chain_moments(model: GaussianModel, chain: Chain) -> tuple[float, float, float]:
    """Mean and variance of the pretrained chain's action, and its variance given x_T (all linear-Gaussian)."""
    ts, table = chain.coefficients(model.schedule)
    mean, var, gain = 0.0, 1.0, 1.0
    for t, (a, b, std) in zip(ts[:-1], table.tolist()):
        al, sg = model.schedule.alpha_sigma(t)
        den = al * al * model.net.v + sg * sg
        step = a + b * sg / den
        mean, var, gain = step * mean - b * sg * al * model.net.m / den, step * step * var + std * std, gain * step
    return mean, var, var - gain * gain


@pytest.mark.parametrize("kind,estimator,group", [("ddim", "ppo", 2048), ("sde", "score", 2048), ("sde", "ppo", 2),
                                                  ("ddim", "score", 4)])
def test_ddpo_reaches_the_tilted_gaussian_in_closed_form(kind, estimator, group):
    """Behaviour N(m, sigma^2), reward k a: the tilt is N(m + beta k sigma^2, sigma^2). On the K-step chain the
    optimum shifts the chain's own action by beta k Var(a | x_T), which is beta k Var(a) up to the chain's
    memory of x_T (alpha_1 ~ 0.007: negligible, as the memoryless schedule intends). At any group size:
    with the group's own mean as the baseline the shift was 0.48 of this at G = 2 and 0.70 at G = 4."""
    chain = Chain(kind, 10)
    model = GaussianModel(0.5, 0.3**2, chain)
    mean, var, var_given_noise = chain_moments(model, chain)
    assert var_given_noise == pytest.approx(var, rel=1e-3)  # memoryless: x_T says next to nothing about a
    beta, k = 3.0, 1.0
    policy = FinetunedPolicy(model, chain)
    cfg = DDPOConfig(beta=beta, estimator=estimator, iterations=150, states_per_iteration=2048 // group,
                     samples_per_state=group, minibatches=2, lr=3e-2, interleave=False)
    train_ddpo(policy, torch.zeros(1, 0), lambda s, a: k * a[:, 0], cfg, torch.Generator().manual_seed(0))
    a = policy.sample(torch.zeros(100_000, 0), torch.Generator().manual_seed(1))[:, 0]
    shift = beta * k * var_given_noise
    assert float(a.mean()) == pytest.approx(mean + shift, abs=0.1 * shift)
    assert float(a.var()) == pytest.approx(var, rel=0.05)


# ---------------------------------------------------------------- the algorithm on a dataset

def tiny(**overrides):
    return registry.make_config("ddpo", "tiny", {"device": "cpu", **overrides})


def test_beta_zero_or_no_iterations_leave_the_pretrained_policy(umaze, tmp_path):
    for name, overrides in (("beta0", {"beta": 0.0}), ("none", {"iterations": 0})):
        algo = DDPO.for_dataset(umaze, tiny(**overrides))
        algo.fit(umaze, tmp_path / name)
        tuned, pre = algo.policy.model.state_dict(), algo.behaviour.state_dict()
        assert all(torch.equal(tuned[k], pre[k]) for k in pre), name
    trained = DDPO.for_dataset(umaze, tiny(iterations=3))
    trained.fit(umaze, tmp_path / "some")
    tuned, pre = trained.policy.model.state_dict(), trained.behaviour.state_dict()
    assert not all(torch.equal(tuned[k], pre[k]) for k in pre)


@pytest.mark.parametrize("name", ["ddpo", "ctrl", "dxmi"])
def test_a_fine_tuners_start_acts_as_its_chain_before_fine_tuning_and_leaves_the_trained_one_as_it_was(
        umaze, tmp_path, name):
    """`start()`, which the harness evaluates beside the final policy on the same episodes: the very actions a run of
    the same stages with no fine-tuning step takes (DxMI: its imitation sampler's), and the fine-tuned policy, acting
    after it, unchanged."""
    cls = registry.get(name)
    obs = umaze.transitions.observations[:16].numpy()
    untuned = cls.for_dataset(umaze, registry.make_config(name, "tiny", {"device": "cpu", "iterations": 0}))
    untuned.fit(umaze, tmp_path / "untuned")
    algo = cls.for_dataset(umaze, registry.make_config(name, "tiny", {"device": "cpu", "iterations": 4}))
    algo.fit(umaze, tmp_path / "tuned")
    algo.seed(5)
    tuned = algo.act(obs)
    start = algo.start()
    untuned.seed(5), start.seed(5)
    before = start.act(obs)
    assert np.array_equal(before, untuned.act(obs))
    # four fine-tuning iterations moved the chain (its samples before the clip to the bounds: the tiny policies'
    # actions sit mostly at the bounds)
    chain = lambda a: a.acting_policy().sample(a.policy_states(a.observations(obs)),  # noqa: E731
                                               torch.Generator().manual_seed(0))
    assert not torch.equal(chain(start), chain(algo)) and torch.equal(chain(start), chain(untuned))
    algo.seed(5)
    assert np.array_equal(algo.act(obs), tuned)
    assert cls.for_dataset(umaze, registry.make_config(name, "tiny", {"device": "cpu"})).start() is None  # not fitted


def test_fine_tuning_moves_the_actions_toward_higher_q0(umaze):
    """Reward = the first action coordinate (Q_0 learns it): DDPO's actions leave the pretrained chain's toward +1
    (0.76 against -0.21 when written); a reward wired with the wrong sign moves them toward -1."""
    data = first_action_bandit(umaze)
    algo = DDPO.for_dataset(data, tiny(behaviour_steps=300, q_steps=500, iterations=40, lr=1e-3, beta=10.0))
    algo.fit(data)
    states = torch.zeros(1024, data.transitions.obs_dim)
    before = algo.new_policy().sample(states, torch.Generator().manual_seed(0))[:, 0].mean()
    after = algo.act(states.numpy())[:, 0].mean()
    assert after > before + 0.5, (before, after)


def test_only_the_last_steps_are_trained_when_asked(umaze, tmp_path):
    algo = DDPO.for_dataset(umaze, tiny(train_last=2, chain_steps=4))
    algo.fit(umaze, tmp_path)
    assert list(algo.policy.trained_steps) == [2, 3]
    traj = algo.policy.rollout(torch.as_tensor(umaze.transitions.observations[:3]), 2)
    assert torch.all(traj.log_probs[:2] == 0) and torch.all(traj.kl[:2] == 0) and torch.all(traj.log_probs[2:] != 0)


def test_acting_is_batched_inside_the_bounds_and_reproducible(umaze, tmp_path):
    algo = DDPO.for_dataset(umaze, tiny())
    record = algo.fit(umaze, tmp_path)
    check_acting(algo, umaze, tmp_path)
    cost = record["cost"]
    assert cost["nfe_per_action"] == 10 and cost["gradient_steps"]["finetune"] == 5 * 1 * 2
    assert cost["finetune_samples"] == 5 * 8 * 4


@pytest.mark.parametrize("overrides,match", [
    ({"beta": -1.0}, "beta must be >= 0"), ({"chain_steps": 0}, "chain_steps"), ({"train_last": 11}, "train_last"),
    ({"interleave": True}, "interleave"), ({"samples_per_state": 1}, "samples_per_state"),
    ({"chain": "ode"}, "unknown chain"), ({"estimator": "dpo"}, "unknown estimator"),
])
def test_bad_config_values_are_one_clear_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny(**overrides)


def test_a_reward_model_returning_nan_stops_before_fine_tuning(umaze, tmp_path, monkeypatch):
    algo = DDPO.for_dataset(umaze, tiny())
    monkeypatch.setattr(DDPO, "reward", lambda self: (lambda s, a: torch.full((s.shape[0],), math.nan)))
    with pytest.raises(ConfigError, match="non-finite"):
        algo.fit(umaze, tmp_path)
    assert not (tmp_path / "finetune.pt").exists() and (tmp_path / "critic.pt").exists()


def test_a_checkpoint_of_another_dataset_is_refused_by_name(umaze, tmp_path):
    from dataclasses import replace

    DDPO.for_dataset(umaze, tiny()).fit(umaze, tmp_path)
    t = umaze.transitions
    other = replace(umaze, id="diffbench/other-v0", transitions=replace(t, rewards=t.rewards + 1.0))
    with pytest.raises(CheckpointError, match="trained on diffbench/pointmaze/umaze-small-v0"):
        DDPO.for_dataset(other, tiny()).fit(other, tmp_path)


def test_a_run_cut_mid_fine_tuning_resumes_bit_for_bit(umaze, tmp_path):
    cut_and_resume(DDPO, tiny(iterations=30), umaze, tmp_path, "finetune")
    assert same_checkpoints(tmp_path, "finetune", ("model",))


# ---------------------------------------------------------------- stages shared across algorithms

def test_qgpo_and_ddpo_share_the_behaviour_and_critic_stages(umaze, tmp_path):
    shared = tmp_path / "shared"
    hooks = TrainHooks(shared_stages=shared)
    qgpo = registry.get("qgpo").for_dataset(umaze, registry.make_config("qgpo", "tiny", {"device": "cpu"}))
    first = qgpo.fit(umaze, tmp_path / "qgpo", hooks=hooks)
    assert first["resumed"] == [] and sorted(p.name for p in shared.glob("*.pt")) == sorted(
        f"{s}-{qgpo.shared_path(s, hooks).name.split('-')[1]}" for s in ("behaviour", "critic", "support"))
    ddpo = DDPO.for_dataset(umaze, tiny())
    second = ddpo.fit(umaze, tmp_path / "ddpo", hooks=hooks)
    assert second["resumed"] == ["behaviour", "critic", "support"]
    assert set(second["stages"]) >= {"behaviour", "critic", "finetune"}
    assert all(torch.equal(a, b) for a, b in zip(ddpo.behaviour.state_dict().values(), qgpo.behaviour.state_dict().values()))
    # another seed trains its own
    third = DDPO.for_dataset(umaze, tiny(seed=1)).fit(umaze, tmp_path / "ddpo1", hooks=hooks)
    assert third["resumed"] == []


def test_a_damaged_shared_stage_is_quarantined_and_trained_again(umaze, tmp_path):
    """A run's checkpoint is a hard link to the shared stage: truncating one damages both. The next run to want the
    stage finds its digest changed, moves it aside (kept for inspection) and trains the stage again, which comes
    out as the first training did."""
    shared = tmp_path / "shared"
    hooks = TrainHooks(shared_stages=shared)
    qgpo = registry.get("qgpo").for_dataset(umaze, registry.make_config("qgpo", "tiny", {"device": "cpu"}))
    qgpo.fit(umaze, tmp_path / "qgpo", hooks=hooks)
    store = next(shared.glob("behaviour-*.pt"))
    assert store.with_suffix(".sha256").is_file()
    good = torch.load(store, weights_only=True)["behaviour"]
    with open(tmp_path / "qgpo" / "behaviour.pt", "r+b") as linked:  # the run's copy, cut short
        linked.truncate(store.stat().st_size // 2)
    ddpo = DDPO.for_dataset(umaze, tiny())
    record = ddpo.fit(umaze, tmp_path / "ddpo", hooks=hooks)
    assert "behaviour" not in record["resumed"] and len(list(shared.glob("behaviour-*.damaged-*.pt"))) == 1
    again = torch.load(store, weights_only=True)["behaviour"]
    assert all(torch.equal(good[k], again[k]) for k in good)  # trained again, bit for bit the first training


def test_the_toy_study_moves_ddpo_toward_the_tilt_and_writes_one_table(tmp_path):
    from bench.studies.finetune import run

    out = tmp_path / "finetune.md"
    summary = run(["moons"], [3.0], [0], "test", out, "diffbench toy finetune --budget test", None)
    ddpo = summary[summary.method == "ddpo"].iloc[0]
    assert ddpo["swd_chain_mean"] < 0.8 * ddpo["swd_chain_start_mean"], ddpo  # fine-tuning moved toward its optimum
    # How far it got at this budget (60 iterations: not yet at the optimum, whose mean exact Q is q_target, about 0.95).
    # The bound was set from runs of this test with DDPO's beta changed alone (the targets kept at beta = 3): mean Q
    # 0.894 at beta = 3, 0.754 at 1.5, 0.962 at 6; without the KL (both its terms) the loss diverges by step 60.
    # So a beta off by 2x either way, or a missing KL, fails here; the optimum itself is tests/gaussian_chain.py's.
    # (the target's own mean Q over its 2000 samples: 0.961 drawn in rounds of 200k, 0.951 in the test budget's
    # rounds of 20k; Q's std under the tilt is 0.21, so such a mean has a standard error near 0.005)
    assert ddpo["q_target_mean"] == pytest.approx(0.951, abs=0.01)
    assert 0.85 < ddpo["q_exact_mean"] < 0.93, ddpo["q_exact_mean"]
    chains = summary[summary.method == "chain"]
    assert set(chains["chain"]) == {"ddim/uniform", "ddim/quadratic", "sde/uniform", "sde/quadratic"}
    text = out.read_text()
    assert "**sde/quadratic**" in text and "| moons | 3 |" in text and "**Headline**" in text
    assert out.with_suffix(".csv").exists() and not out.with_suffix(".partial.csv").exists()
    assert "What was chosen with the targets in hand" in text and "queries of the exact Q" in text
    learned = summary[summary.method == "ddpo (Q₀)"].iloc[0]  # the offline case: Q_0 fitted on the data alone
    assert "## With a Q₀ learned from the data" in text and learned["q_learned_mean"] == learned["q_learned_mean"]
    assert "| DDPO: Q₀ − exact Q |" in text and "\nOn Q₀ (" in text  # each method on Q_0 against itself on the exact Q
    # the report again from the rows alone: nothing trained, the same verdicts
    again = tmp_path / "again.md"
    run(["moons"], [3.0], [0], "test", again, "again", None, from_rows=[out.with_suffix(".csv")])
    assert again.read_text().splitlines()[-1] == text.splitlines()[-1]
    with pytest.raises(ConfigError, match="no such file"):
        run(["moons"], [3.0], [0], "test", again, "again", None, from_rows=[tmp_path / "missing.csv"])
    # the Q_0 rows alone (to add them to an earlier exact-Q run) are the rows the full run made, so they merge
    alone = tmp_path / "q0.md"
    run(["moons"], [3.0], [0], "test", alone, "q0 alone", None, rewards=("learned",))
    made = pd.read_csv(alone.with_suffix(".csv"))
    assert set(made.method) == {"chain", "cep (Q₀)", "ddpo (Q₀)"}
    full = pd.read_csv(out.with_suffix(".csv")).set_index(["method", "beta"])
    for (method, beta), row in made[made.method != "chain"].set_index(["method", "beta"]).iterrows():
        assert row["swd_theta"] == full.loc[(method, beta), "swd_theta"], method
    exact_only = out.with_suffix(".exact.csv")
    pd.read_csv(out.with_suffix(".csv")).query("not method.str.contains('Q₀')").to_csv(exact_only, index=False)
    run(["moons"], [3.0], [0], "test", again, "merged", None, from_rows=[exact_only, alone.with_suffix(".csv")])
    merged = again.read_text()
    assert merged.splitlines()[-1] == text.splitlines()[-1] and "## With a Q₀ learned from the data" in merged
    assert "the runs fitted the same μθ" in merged
    spent = pd.read_csv(again.with_suffix(".csv"))["job_seconds"].sum()  # the Q_0 run's time is not merged away
    assert spent == pytest.approx(pd.read_csv(exact_only)["job_seconds"].sum() + made["job_seconds"].sum(), rel=1e-3)
    with pytest.raises(ConfigError, match="choose one or both"):
        run(["moons"], [3.0], [0], "test", again, "bad", None, rewards=("oracle",))
