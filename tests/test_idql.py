"""IDQL: IQL's critic beside its own behaviour model, the official LN-ResNet DDPM whose chain clips every step and
whose EMA copy acts; selection among candidates (temperature 0 is the behaviour model, a rising temperature picks
higher advantages; greedy is the best candidate)."""

import numpy as np
import pytest
import torch

from policies import registry
from policies.algorithms.idql import IDQL
from policies.core.ddpm import DiscreteDiffusion, vp_betas
from policies.core.networks import LNResNetNoiseNet
from policies.errors import ConfigError

from .checks import check_selection


def tiny(**overrides):
    return registry.make_config("idql", "tiny", {"device": "cpu", **overrides})


def test_idql_picks_among_behaviour_candidates_by_the_iql_advantage(umaze, tmp_path):
    algo = IDQL.for_dataset(umaze, tiny(candidates=16))
    algo.fit(umaze, tmp_path)
    check_selection(algo, umaze, algo.critic.advantage,
                    lambda obs, g: algo.ema.sample(obs, algo.action_low, algo.action_high, "clipped", g),
                    algo.critic.q_target, rule="softmax")


def test_greedy_takes_the_best_candidate_and_expectile_uses_the_expectile(umaze, tmp_path):
    algo = IDQL.for_dataset(umaze, tiny(candidates=8))
    algo.fit(umaze, tmp_path)
    obs = umaze.transitions.observations[:50]
    algo.seed(0)
    greedy = torch.as_tensor(algo.act(obs.numpy(), rule="greedy"))
    algo.seed(0)  # the same candidates again
    candidates = algo.draw(obs.repeat_interleave(8, 0)).view(50, 8, -1)
    best = algo.critic.advantage(obs, candidates).max(1).values
    assert torch.allclose(algo.critic.advantage(obs, greedy), best, atol=1e-5)
    with pytest.raises(ConfigError, match="tau in"):
        algo.act(obs.numpy(), rule="expectile", temperature=1.0)


def test_the_ema_copy_acts_and_the_online_network_only_trains(umaze, tmp_path):
    algo = IDQL.for_dataset(umaze, tiny(candidates=4, behaviour_steps=30))
    algo.fit(umaze, tmp_path)
    obs = umaze.transitions.observations[:20].numpy()
    algo.seed(1)
    before = algo.act(obs)
    assert not all(torch.equal(a, b) for a, b in zip(algo.ema.parameters(), algo.behaviour.parameters()))
    with torch.no_grad():
        for p in algo.behaviour.parameters():
            p.add_(1.0)
    algo.seed(1)
    assert np.array_equal(algo.act(obs), before), "acting read the online network, not its EMA copy"
    with torch.no_grad():
        for p in algo.ema.parameters():
            p.add_(0.5)
    algo.seed(1)
    assert not np.array_equal(algo.act(obs), before)


def official_sampler(eps, x, noises, betas, clip=True):
    """networks/diffusion.py's ddpm_sampler in NumPy: the DDPM mean, noise of variance beta, a clip every step."""
    alphas, abar = 1 - betas, np.cumprod(1 - betas)
    for i in reversed(range(len(betas))):
        x = (x - (1 - alphas[i]) / np.sqrt(1 - abar[i]) * eps(x, i)) / np.sqrt(alphas[i])
        if i > 0:
            x = x + np.sqrt(betas[i]) * noises[i]
        if clip:
            x = np.clip(x, -1, 1)
    return np.clip(x, -1, 1)


def test_the_chain_clips_the_action_after_every_step_as_the_official_one():
    """A network whose noise estimate drives the chain past the box: the official sampler clips after every
    step, which ends far from a chain that clips only its result; ours is the official one."""
    net = LNResNetNoiseNet(2, 3, hidden=8, blocks=1)
    for p in net.parameters():
        torch.nn.init.zeros_(p)
    torch.nn.init.constant_(net.out.bias, 1.5)
    model = DiscreteDiffusion(net, 2, levels=5).eval()
    low, high = torch.full((2,), -1.0), torch.full((2,), 1.0)
    ours = model.sample(torch.zeros(64, 3), low, high, "clipped", torch.Generator().manual_seed(5)).detach().numpy()
    g = torch.Generator().manual_seed(5)
    x = torch.randn((64, 2), generator=g).double().numpy()
    noises = {i: torch.randn((64, 2), generator=g).double().numpy() for i in reversed(range(1, 5))}
    eps = lambda x, i: np.full_like(x, 1.5)  # noqa: E731
    official = official_sampler(eps, x, noises, vp_betas(5).numpy())
    np.testing.assert_allclose(ours, official, atol=1e-5)
    assert np.abs(official_sampler(eps, x, noises, vp_betas(5).numpy(), clip=False) - official).max() > 0.1


def test_the_noise_network_is_the_official_ln_resnet():
    net = LNResNetNoiseNet(6, 17)
    assert [b.up.out_features for b in net.blocks] == [1024] * 3 and net.inp.out_features == 256
    assert all(isinstance(b.norm, torch.nn.LayerNorm) and b.dropout.p == 0.1 for b in net.blocks)
    assert net.time_embed[0].kernel.shape == (32,)  # 64 learned Fourier features of the level
    x, s = torch.randn(4, 6), torch.randn(4, 17)
    net.train()
    assert not torch.equal(net(x, torch.ones(4), s), net(x, torch.ones(4), s))  # dropout while training
    net.eval()
    assert torch.equal(net(x, torch.ones(4), s), net(x, torch.ones(4), s))


def test_the_paper_preset_takes_iqls_antmaze_expectile():
    assert IDQL.domain_overrides("paper", "antmaze") == {"expectile": 0.9}
    assert IDQL.domain_overrides("paper", "locomotion") == {}


@pytest.mark.parametrize("overrides,match", [({"rule": "best"}, "rule"), ({"expectile": 1.0}, "expectile"),
                                             ({"candidates": 0}, "candidates"), ({"dropout": 1.5}, "dropout")])
def test_bad_idql_config_values_are_one_clear_error(overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny(**overrides)
