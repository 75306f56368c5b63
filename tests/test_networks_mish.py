"""The one-exp Mish (policies.core.networks.mish) against torch's: equal to float rounding in value and gradient,
and a tiny run of each algorithm that uses it trains to the same weights to rounding with either."""

import pytest
import torch
import torch.nn.functional as F

from policies import registry
from policies.core import networks

X = torch.cat([torch.linspace(-120, 120, 48_001), torch.randn(20_000) * 4, torch.tensor([0.0, -0.0, 20.0, 20.001])])


def test_value_and_gradient_equal_torchs_to_float_rounding():
    a, b = X.clone().requires_grad_(True), X.clone().requires_grad_(True)
    ours, theirs = networks.mish(a), F.mish(b)
    scale = theirs.detach().abs().clamp(min=1e-6)
    assert ((ours.detach() - theirs.detach()).abs() / scale).max() < 2e-6
    g = torch.randn_like(X)
    ours.backward(g), theirs.backward(g)
    assert torch.allclose(a.grad, b.grad, rtol=2e-6, atol=2e-7)
    assert torch.equal(networks.mish(torch.tensor([50.0, 1e4])), torch.tensor([50.0, 1e4]))  # no overflow
    assert torch.isfinite(networks.mish(torch.tensor([-1e4, -90.0]))).all()


@pytest.mark.parametrize("name", ["diffusion_ql", "dac", "idql"])
def test_a_tiny_run_trains_to_the_same_weights_either_way(name, umaze, monkeypatch):
    weights = []
    for fn in (networks.mish, F.mish):
        monkeypatch.setattr(networks, "mish", fn)
        algo = registry.get(name).for_dataset(umaze, registry.make_config(name, "tiny", {"device": "cpu"}))
        algo.fit(umaze)
        nets = {k: v for k, v in vars(algo).items() if isinstance(v, torch.nn.Module)}
        weights.append({f"{k}.{p}": t.detach().clone() for k, net in nets.items() for p, t in net.state_dict().items()})
    ours, theirs = weights
    assert ours.keys() == theirs.keys() and ours
    worst = max((ours[k] - theirs[k]).abs().max().item() for k in ours if ours[k].is_floating_point())
    assert worst < 1e-6, worst  # 6e-8 to 9e-8 when written; a wrong activation (SiLU): 3e-3 to 9e-3
