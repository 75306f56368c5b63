"""Diffusion-QL: at eta = 0 the actor trains exactly as a diffusion BC on the same batches; its 5-step chain is
the official 'vp' DDPM; the Q term moves the policy toward higher Q; selection among its candidates."""

import numpy as np
import pytest
import torch

from policies import registry
from policies.algorithms.diffusion_ql import DiffusionQL
from policies.core.diffusion import DiffusionModel
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
        bc = DiffusionModel(t.action_dim, t.obs_dim, cfg.score_widths, VPSchedule(beta_max=cfg.beta_max))
    opt, gen = torch.optim.Adam(bc.parameters(), lr=cfg.lr), stage_generator(cfg.seed, "policy", torch.device("cpu"))
    for _ in range(cfg.steps):  # plain diffusion BC: a batch, the denoising loss (mean over dimensions), Adam
        j = torch.randint(t.actions.shape[0], (cfg.batch,), generator=gen)
        opt.zero_grad()
        (bc.loss(t.actions[j], t.observations[j], gen) / t.action_dim).backward()
        opt.step()
    for (name, mine), theirs in zip(algo.actor.state_dict().items(), bc.state_dict().values()):
        assert torch.equal(mine, theirs), name


def test_the_chain_is_the_official_vp_ddpm_schedule():
    """Official betas: 1 - exp(-b_min / T - (b_max - b_min)(2k - 1) / (2 T^2)); their products are alpha(k / T)^2."""
    T, k = 5, np.arange(1, 6)
    betas = 1 - np.exp(-0.1 / T - 0.5 * (10.0 - 0.1) * (2 * k - 1) / T**2)
    alpha_bar = np.cumprod(1 - betas)
    ours = np.array([VPSchedule(beta_max=10.0).alpha_sigma(float(i) / T)[0] ** 2 for i in k])
    np.testing.assert_allclose(ours, alpha_bar, rtol=1e-10)
    assert tiny().chain.name == "ddim" and tiny().chain.eta == 1.0 and tiny().chain.steps == 5


def test_the_q_term_raises_the_critics_value_of_the_policys_actions(umaze):
    """Same seed, same critic data: with eta > 0 the trained actor's own samples score higher under its critic
    than with eta = 0 (whose critic trains on the same batches and noise)."""
    obs = umaze.transitions.observations[:256]

    def value(eta: float) -> float:
        algo = DiffusionQL.for_dataset(umaze, tiny(eta=eta, steps=150, candidates=1))
        algo.fit(umaze)
        with torch.no_grad():
            return float(algo.critic(obs, algo.sample(algo.actor, obs, torch.Generator().manual_seed(0))).mean())

    assert value(5.0) > value(0.0)


def test_diffusion_ql_picks_among_its_own_samples_by_q(umaze, tmp_path):
    algo = DiffusionQL.for_dataset(umaze, tiny(candidates=16, max_q_backup=True))
    algo.fit(umaze, tmp_path)
    check_selection(algo, umaze, algo.critic_target, lambda obs, g: algo.sample(algo.actor, obs, g), algo.critic_target)


def test_the_paper_preset_takes_the_official_antmaze_settings():
    assert DiffusionQL.domain_overrides("paper", "antmaze") == {"steps": 1_000_000, "max_q_backup": True, "eta": 2.5,
                                                               "grad_norm": 2.5}
    assert DiffusionQL.domain_overrides("paper", "locomotion") == {}


@pytest.mark.parametrize("overrides,match", [({"eta": -1.0}, "eta"), ({"diffusion_steps": 0}, "diffusion_steps"),
                                             ({"ema_decay": 2.0}, "ema_decay"), ({"score_widths": [0]}, "score_widths")])
def test_bad_diffusion_ql_config_values_are_one_clear_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny(**overrides)
