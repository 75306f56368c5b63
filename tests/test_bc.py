"""Behaviour cloning: recovers the behaviour policy's mean action (ground truth on synthetic data),
runs end to end through the harness beside QGPO, and reloads from its checkpoint."""

import numpy as np
import torch

from bench.harness.executors import run_all
from bench.harness.runner import RunSpec
from bench.harness.store import ResultsStore
from envs import load_dataset
from envs.minari_source import pinned_root
from policies.algorithms.bc import BC, BCPolicy, fit_bc

from .conftest import TINY_ID


def test_bc_learns_the_conditional_mean_action():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 2, generator=g)
    mean = lambda s: 0.5 * torch.tanh(s @ w)  # noqa: E731  the behaviour policy's mean, inside the bounds
    s = torch.randn(20_000, 3, generator=g)
    a = mean(s) + 0.1 * torch.randn(20_000, 2, generator=g)
    torch.manual_seed(0)
    policy = BCPolicy(3, 2, 64, 2, -torch.ones(2), torch.ones(2))
    fit_bc(policy, s, a, steps=1500, batch=256, lr=3e-3, generator=g)
    fresh = torch.randn(4000, 3, generator=g)
    with torch.no_grad():
        rmse = (policy(fresh) - mean(fresh)).pow(2).mean().sqrt().item()
    assert rmse < 0.03, rmse  # the noise (std 0.1) averages out; predicting 0 would score about 0.3


def test_bc_and_qgpo_in_one_sweep_and_bc_reloads(tiny_pointmaze, tmp_path, session_root):
    specs = [RunSpec(algorithm=algo, dataset=TINY_ID, seed=seed, preset="tiny", overrides={"device": "cpu"},
                     episodes=2) for algo in ("bc", "qgpo") for seed in (0, 1)]
    out = run_all(specs, tmp_path, workers=2)
    assert len(out["finished"]) == 4, [r.error for r in out["failed"]]
    runs = ResultsStore(tmp_path).table("runs").set_index("algorithm")
    assert runs.loc["bc", "nfe_per_action"].tolist() == [1, 1] and runs.loc["bc", "gradient_steps"].tolist() == [50, 50]
    assert len(run_all(specs, tmp_path)["skipped"]) == 4

    with pinned_root(session_root):
        ds = load_dataset(TINY_ID)
    workdir = specs[0].directory(tmp_path)
    loaded = BC.load(workdir, ds, device="cpu")
    obs = ds.transitions.observations[:5].numpy()
    first = loaded.act(obs)
    assert first.shape == (5, 2) and np.all(np.abs(first) <= 1)
    assert np.array_equal(first, BC.load(workdir, ds, device="cpu").act(obs))  # deterministic policy
