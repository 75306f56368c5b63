"""The many-seeds benchmark's stacked step trains each seed as its own run would (the benchmark reports whether
bit for bit; here to float rounding, which every BLAS keeps)."""

import pytest
import torch

from bench.studies.stacked_seeds import CASES, StackedMLP, bitwise_equal
from policies.core.networks import mlp


def test_stacked_mlp_is_its_seeds_networks():
    nets = [mlp([5, 16, 16, 3]) for _ in range(3)]
    stacked = StackedMLP(nets)
    x = torch.randn(3, 7, 5)
    expected = torch.stack([net(x[n]) for n, net in enumerate(nets)])
    assert torch.allclose(stacked(x), expected, atol=1e-6)
    back = stacked.unstack(1, mlp([5, 16, 16, 3]))
    assert all(torch.equal(a, b) for a, b in zip(back.parameters(), nets[1].parameters()))


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dims", [(17, 6), (4, 2)])
def test_stacked_steps_follow_each_seeds_own_run(name, dims):
    case = CASES[name](3, *dims)
    own = torch.stack([torch.stack([step() for step in case.steps]) for _ in range(4)])
    together = torch.stack([case.stacked_step() for _ in range(4)])
    assert not torch.allclose(own[0], own[-1])  # the steps train
    assert torch.allclose(own, together, rtol=1e-5, atol=0)
    for n, net in enumerate(case.nets):
        for a, b in zip(net.parameters(), case.seed_net(n).parameters()):
            assert torch.allclose(a, b, rtol=0, atol=1e-6)


def test_bitwise_check_sees_a_difference():
    case = CASES["bc_step"](2, 17, 6)
    case.nets[1][0].weight.data[0, 0] += 1e-3  # seed 1's own run now starts elsewhere
    assert not bitwise_equal(case, steps=1)
