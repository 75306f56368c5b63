"""Diffusion-QL: at eta = 0 the actor trains exactly as a diffusion BC on the same batches; its network is the
official Mish MLP and its 5-step chain the official 'vp' DDPM that clamps x0 at every step; the Q term moves the
policy toward higher Q; selection among its candidates."""

import numpy as np
import pytest
import torch

from policies import registry
from policies.algorithms.diffusion_ql import DiffusionQL
from policies.core.ddpm import DiscreteDiffusion, vp_betas
from policies.core.networks import DQLNoiseNet
from policies.core.schedule import VPSchedule
from policies.core.training import stage_generator
from policies.errors import ConfigError

from .checks import check_selection


def tiny(**overrides):
    return registry.make_config("diffusion_ql", "tiny", {"device": "cpu", **overrides})


def test_at_eta_zero_the_actor_is_a_diffusion_bc_batch_for_batch(umaze):
    cfg = tiny(eta=0.0, grad_norm=0.0, steps=30)
    algo = DiffusionQL.for_dataset(umaze, cfg)
    algo.fit(umaze)
    t = umaze.transitions
    with torch.random.fork_rng(devices=[]):  # the algorithm builds its actor first, under its seed
        torch.manual_seed(cfg.seed)
        bc = DiscreteDiffusion(DQLNoiseNet(t.action_dim, t.obs_dim, cfg.hidden, cfg.layers), t.action_dim,
                               cfg.diffusion_steps, cfg.beta_max)
    opt, gen = torch.optim.Adam(bc.parameters(), lr=cfg.lr), stage_generator(cfg.seed, "policy", torch.device("cpu"))
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    for _ in range(cfg.steps):  # plain diffusion BC: a batch, the denoising loss (mean over dimensions), Adam
        j = torch.randint(t.actions.shape[0], (cfg.batch,), generator=gen)
        opt.zero_grad()
        bc.loss(t.actions[j], t.observations[j], gen, reduce="mean").backward()
        opt.step()
        decay.step()
    for (name, mine), theirs in zip(algo.actor.state_dict().items(), bc.state_dict().values()):
        assert torch.equal(mine, theirs), name


def test_the_levels_are_the_official_vp_ddpm_schedule():
    """Official betas: 1 - exp(-b_min / T - (b_max - b_min)(2k - 1) / (2 T^2)); their products are alpha(k / T)^2."""
    T, k = 5, np.arange(1, 6)
    betas = 1 - np.exp(-0.1 / T - 0.5 * (10.0 - 0.1) * (2 * k - 1) / T**2)
    np.testing.assert_allclose(vp_betas(T).numpy(), betas, rtol=1e-12)
    ours = np.array([VPSchedule(beta_max=10.0).alpha_sigma(float(i) / T)[0] ** 2 for i in k])
    np.testing.assert_allclose(ours, np.cumprod(1 - betas), rtol=1e-10)


def official_chain(eps, x, noises, betas, low, high, clip_x0=True):
    """agents/diffusion.py's p_sample_loop in NumPy: x0 from the noise, clamped, then the posterior's draw."""
    abar = np.cumprod(1 - betas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    for i in reversed(range(len(betas))):
        x0 = np.sqrt(1 / abar[i]) * x - np.sqrt(1 / abar[i] - 1) * eps(x, i)
        if clip_x0:
            x0 = np.clip(x0, low, high)
        mean = (betas[i] * np.sqrt(abar_prev[i]) / (1 - abar[i]) * x0
                + (1 - abar_prev[i]) * np.sqrt(1 - betas[i]) / (1 - abar[i]) * x)
        var = betas[i] * (1 - abar_prev[i]) / (1 - abar[i])
        x = mean + (np.exp(0.5 * np.log(max(var, 1e-20))) * noises[i] if i > 0 else 0.0)
    return np.clip(x, low, high)


def test_the_chain_clamps_its_x0_estimate_at_every_step_as_the_official_one():
    """A network whose noise estimate throws x0 far outside the box: the official chain clamps x0 at every step,
    which moves the action well away from the chain without those clamps; ours is the official one."""
    t_states = torch.zeros(64, 3)
    net = DQLNoiseNet(2, 3, hidden=16)
    for p in net.parameters():
        torch.nn.init.zeros_(p)
    torch.nn.init.constant_(net.out.bias, -2.5)  # eps = -2.5 whatever the input: x0 = (x + 2.5 sqrt(1 - abar)) / ...
    model = DiscreteDiffusion(net, 2, levels=5)
    low, high = torch.full((2,), -1.0), torch.full((2,), 1.0)
    ours = model.sample(t_states, low, high, "posterior", torch.Generator().manual_seed(3)).detach().numpy()
    g = torch.Generator().manual_seed(3)
    x = torch.randn((64, 2), generator=g).double().numpy()
    noises = {i: torch.randn((64, 2), generator=g).double().numpy() for i in reversed(range(1, 5))}
    betas = vp_betas(5).numpy()
    eps = lambda x, i: np.full_like(x, -2.5)  # noqa: E731
    official = official_chain(eps, x, noises, betas, -1.0, 1.0)
    np.testing.assert_allclose(ours, official, atol=1e-5)
    unclamped = official_chain(eps, x, noises, betas, -1.0, 1.0, clip_x0=False)
    assert np.abs(unclamped - official).max() > 0.1  # a chain missing the per-step clamp fails the line above


def test_the_q_term_moves_the_policy_toward_the_actions_its_critic_values(umaze):
    """Rewards -(a_0 - 0.8)^2 and gamma 0, so the critic learns Q = r: with eta > 0 the trained actor's own samples
    lie nearer a_0 = 0.8 than with eta = 0 (same seed, batches and noise)."""
    import dataclasses

    t = umaze.transitions
    data = dataclasses.replace(umaze, transitions=dataclasses.replace(t, rewards=-(t.actions[:, 0] - 0.8) ** 2))
    obs = t.observations[:256]

    def distance(eta: float) -> float:
        algo = DiffusionQL.for_dataset(data, tiny(eta=eta, gamma=0.0, steps=300, candidates=1))
        algo.fit(data)
        with torch.no_grad():
            return float((algo.sample(algo.actor, obs, torch.Generator().manual_seed(0))[:, 0] - 0.8).abs().mean())

    assert distance(5.0) < distance(0.0) - 0.05


def test_diffusion_ql_picks_among_its_own_samples_by_q(umaze, tmp_path):
    algo = DiffusionQL.for_dataset(umaze, tiny(candidates=16, max_q_backup=True))
    algo.fit(umaze, tmp_path)
    check_selection(algo, umaze, algo.critic_target, lambda obs, g: algo.sample(algo.actor, obs, g), algo.critic_target)


def test_the_paper_preset_takes_the_official_antmaze_settings():
    assert DiffusionQL.domain_overrides("paper", "antmaze") == {"steps": 1_000_000, "max_q_backup": True, "eta": 2.5,
                                                               "grad_norm": 2.5}
    assert DiffusionQL.domain_overrides("paper", "locomotion") == {}


@pytest.mark.parametrize("overrides,match", [({"eta": -1.0}, "eta"), ({"diffusion_steps": 0}, "diffusion_steps"),
                                             ({"ema_decay": 2.0}, "ema_decay"), ({"hidden": 0}, "hidden")])
def test_bad_diffusion_ql_config_values_are_one_clear_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny(**overrides)
