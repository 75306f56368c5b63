"""The one-exp Mish (policies.core.networks.mish) against torch's: equal to float rounding in value and gradient,
and a tiny run of each algorithm that uses it trains to the same weights to rounding with either. The same two
checks hold the fused (torch.compile) kernel to the eager one."""

import shutil

import pytest
import torch
import torch.nn.functional as F

from policies import registry
from policies.core import networks

RNG = torch.Generator().manual_seed(0)  # seeded: X and the upstream gradients are the same in every run of the suite
X = torch.cat([torch.linspace(-120, 120, 48_001), torch.randn(20_000, generator=RNG) * 4,
               torch.tensor([0.0, -0.0, 20.0, 20.001])])
G = torch.randn(X.shape, generator=RNG)
# Near Mish's minimum (x = -1.19) its slope crosses zero and both kernels' slopes carry about 1e-7 of cancellation,
# times the upstream gradient (up to about 4 here): 2.4e-7 over 30 draws of X and G, so atol is 5e-7.
GRAD_ATOL = 5e-7


def test_value_and_gradient_equal_torchs_to_float_rounding():
    a, b = X.clone().requires_grad_(True), X.clone().requires_grad_(True)
    ours, theirs = networks.mish(a), F.mish(b)
    scale = theirs.detach().abs().clamp(min=1e-6)
    assert ((ours.detach() - theirs.detach()).abs() / scale).max() < 2e-6
    ours.backward(G), theirs.backward(G)
    assert torch.allclose(a.grad, b.grad, rtol=2e-6, atol=GRAD_ATOL)
    assert torch.equal(networks.mish(torch.tensor([50.0, 1e4])), torch.tensor([50.0, 1e4]))  # no overflow
    assert torch.isfinite(networks.mish(torch.tensor([-1e4, -90.0]))).all()


def _fused(monkeypatch) -> None:
    """Fresh fused kernels, compiled on first use (the suite's conftest turns compiling off elsewhere)."""
    monkeypatch.setenv("DIFFBENCH_COMPILE", "1")
    monkeypatch.setattr(networks, "_fused_value", networks._Fused(networks._mish_value))
    monkeypatch.setattr(networks, "_fused_grad", networks._Fused(networks._mish_grad))


def test_the_fused_kernel_equals_the_eager_one_to_float_rounding(monkeypatch):
    eager = X.clone().requires_grad_(True)
    value = networks.mish(eager)
    value.backward(G)
    _fused(monkeypatch)
    fused = X.clone().reshape(5, -1).requires_grad_(True)  # any shape: the kernel sees it flattened
    fused_value = networks.mish(fused)
    fused_value.backward(G.reshape(5, -1))
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    assert networks.mish_kernels()[1] == {"cpu": "inductor" if compiler else "eager"}
    scale = value.detach().abs().clamp(min=1e-6)
    assert ((fused_value.detach().reshape(-1) - value.detach()).abs() / scale).max() < 2e-6
    assert torch.allclose(fused.grad.reshape(-1), eager.grad, rtol=2e-6, atol=GRAD_ATOL)
    with torch.inference_mode():  # acting: DAC's and Diffusion-QL's samplers run under inference mode
        assert torch.allclose(networks.mish(X.view(5, 1, -1)).reshape(-1), value.detach(), rtol=2e-6, atol=2e-7)


def test_a_kernel_that_fails_after_compiling_falls_back_to_eager_and_says_so(monkeypatch):
    _fused(monkeypatch)
    value = networks.mish(X[:100])  # compiles (or finds no compiler and stays eager)

    def broken(*args):
        raise RuntimeError("backend gave up")

    monkeypatch.setattr(networks._fused_value, "compiled", broken)
    networks._fused_value.kernel["cpu"] = "inductor"  # as after a good first compile
    with pytest.warns(UserWarning, match="eager from here on"):
        again = networks.mish(X[:100])
    assert torch.allclose(again, value, rtol=2e-6, atol=GRAD_ATOL) and networks.mish_kernels()[1] == {"cpu": "eager"}


def test_a_tiny_dac_run_trains_to_the_same_weights_fused_or_eager(umaze, monkeypatch):
    weights = [_tiny_weights("dac", umaze)]
    _fused(monkeypatch)
    weights.append(_tiny_weights("dac", umaze))
    _close(*weights)


def _tiny_weights(name, umaze) -> dict[str, torch.Tensor]:
    algo = registry.get(name).for_dataset(umaze, registry.make_config(name, "tiny", {"device": "cpu"}))
    algo.fit(umaze)
    nets = {k: v for k, v in vars(algo).items() if isinstance(v, torch.nn.Module)}
    return {f"{k}.{p}": t.detach().clone() for k, net in nets.items() for p, t in net.state_dict().items()}


def _close(ours, theirs) -> None:
    assert ours.keys() == theirs.keys() and ours
    worst = max((ours[k] - theirs[k]).abs().max().item() for k in ours if ours[k].is_floating_point())
    assert worst < 1e-6, worst  # 6e-8 to 9e-8 when written; a wrong activation (SiLU): 3e-3 to 9e-3


@pytest.mark.parametrize("name", ["diffusion_ql", "dac", "idql"])
def test_a_tiny_run_trains_to_the_same_weights_either_way(name, umaze, monkeypatch):
    weights = []
    for fn in (networks.mish, F.mish):
        monkeypatch.setattr(networks, "mish", fn)
        weights.append(_tiny_weights(name, umaze))
    _close(*weights)
