"""The lean and compiled acting paths give QGPO's actions: same noise, same solver, equal up to float rounding."""

import pytest
import torch

from policies.algorithms.pretrain import generate_support
from policies.core.acting import GuidedActor, solver_times
from policies.core.diffusion import DiffusionModel
from policies.core.networks import EnergyNet
from policies.core.samplers import SamplerSpec
from policies.errors import ConfigError

SAMPLERS = [SamplerSpec(steps=6), SamplerSpec(steps=7, order=3), SamplerSpec(steps=5, method="multistep"),
            SamplerSpec(name="ddim", steps=4, eta=1.0), SamplerSpec(name="sde", steps=5)]


def nets(seed: int = 0):
    torch.manual_seed(seed)
    model = DiffusionModel(3, 5, widths=(32, 16, 8)).eval()
    return model, EnergyNet(3, 5, hidden=16, layers=3)


def assert_same_actions(ours: torch.Tensor, plain: torch.Tensor) -> None:
    # reordered sums differ in the last bits; 15 evaluations of an untrained net amplify that to ~1e-7 of the
    # actions' magnitude, far below any seed-to-seed difference
    assert ours.shape == plain.shape
    assert (ours - plain).abs().max() <= 1e-5 * plain.abs().max()


@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: f"{s.name}-{s.method}-{s.order}")
@pytest.mark.parametrize("scale", [0.0, 2.0])
def test_lean_path_matches_plain_sampling(sampler: SamplerSpec, scale: float) -> None:
    model, energy = nets()
    states = torch.randn(7, 5)
    plain = model.sample(states, 1, sampler, energy, scale, torch.Generator().manual_seed(3)).x[:, 0]
    lean = GuidedActor(model, energy, sampler, scale)(states, torch.Generator().manual_seed(3))
    assert_same_actions(lean, plain)


def test_lean_path_reads_the_current_weights() -> None:
    model, energy = nets()
    states, sampler = torch.randn(4, 5), SamplerSpec(steps=4)
    actor = GuidedActor(model, energy, sampler, 1.0)
    before = actor(states, torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in list(model.parameters()) + list(energy.parameters()):
            p.add_(0.05 * torch.randn_like(p))
    after = actor(states, torch.Generator().manual_seed(0))
    assert not torch.allclose(before, after)
    assert_same_actions(after, model.sample(states, 1, sampler, energy, 1.0, torch.Generator().manual_seed(0)).x[:, 0])


def test_compiled_path_matches_plain_sampling() -> None:
    model, energy = nets(1)
    states, sampler = torch.randn(6, 5), SamplerSpec(steps=4)
    actor = GuidedActor(model, energy, sampler, 2.0, path="compiled")
    plain = model.sample(states, 1, sampler, energy, 2.0, torch.Generator().manual_seed(5)).x[:, 0]
    assert_same_actions(actor(states, torch.Generator().manual_seed(5)), plain)


def test_solver_times_are_the_evaluations_of_the_solver() -> None:
    model, _ = nets()
    assert len(solver_times(SamplerSpec(steps=15), model)) == 15
    assert solver_times(SamplerSpec(name="ddim", steps=4), model)[0] == 1.0


def test_unknown_acting_path_is_refused() -> None:
    model, energy = nets()
    with pytest.raises(ConfigError, match="acting path"):
        GuidedActor(model, energy, SamplerSpec(), 1.0, path="fast")


@pytest.mark.parametrize("sampler", SAMPLERS[:2] + SAMPLERS[3:4], ids=lambda s: f"{s.name}-{s.order}")
def test_many_actions_per_state_match_plain_sampling(sampler: SamplerSpec) -> None:
    """Support actions: each state's conditioning is computed once for its M actions."""
    model, energy = nets(2)
    states = torch.randn(5, 5)
    plain = model.sample(states, 4, sampler, energy, 1.5, torch.Generator().manual_seed(9)).x
    lean = GuidedActor(model, energy, sampler, 1.5)(states, torch.Generator().manual_seed(9), n=4)
    assert_same_actions(lean, plain)


def test_support_generation_uses_the_lean_path_with_the_same_numbers() -> None:
    model, _ = nets(3)
    states = torch.randn(9, 5)
    support = generate_support(model, states, 4, SamplerSpec(steps=5), chunk=16, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    plain = torch.cat([model.sample(states[i:i + 4], 4, SamplerSpec(steps=5), generator=g).x for i in range(0, 9, 4)])
    assert_same_actions(support, plain)


def test_blocks_at_several_scales_are_the_calls_at_each_scale() -> None:
    """One batched call for K guidance scales draws, per block, what K separate calls draw."""
    model, energy = nets(4)
    states, sampler, scales = torch.randn(6, 5), SamplerSpec(steps=5), [0.0, 1.0, 3.0]
    actor = GuidedActor(model, energy, sampler, 1.0)
    rows = torch.tensor(scales).repeat_interleave(6)
    batched = actor(states.repeat(3, 1), torch.Generator().manual_seed(8), scales=rows, blocks=3)
    for k, scale in enumerate(scales):
        alone = model.sample(states, 1, sampler, energy, scale, torch.Generator().manual_seed(8)).x[:, 0]
        assert_same_actions(batched[6 * k: 6 * (k + 1)], alone)
    with pytest.raises(ConfigError, match="equal blocks"):
        actor(states[:5], blocks=2)
    with pytest.raises(ConfigError, match="draws more"):
        GuidedActor(model, energy, SAMPLERS[3], 1.0)(states, blocks=2)


def test_large_batches_compute_the_conditioning_per_evaluation(monkeypatch) -> None:
    """Past PRECOMPUTE_FLOATS the (T, B, ...) buffer is not built; the numbers are the same."""
    import policies.core.acting as acting

    monkeypatch.setattr(acting, "PRECOMPUTE_FLOATS", 0)
    model, energy = nets(5)
    states, sampler = torch.randn(6, 5), SamplerSpec(steps=5)
    for scale, n in ((0.0, 1), (2.0, 1), (2.0, 3)):
        plain = model.sample(states, n, sampler, energy, scale, torch.Generator().manual_seed(2)).x
        lean = GuidedActor(model, energy, sampler, scale)(states, torch.Generator().manual_seed(2), n=n)
        assert_same_actions(lean.view_as(plain), plain)
