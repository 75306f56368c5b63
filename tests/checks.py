"""Checks every staged algorithm's tests make: a run cut mid-stage (everything after its last mid-stage
checkpoint lost, as with SIGKILL) resumes to the bit, and acting is batched, in bounds, reproducible
and the same after reloading."""

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from policies.core.training import TrainHooks


class Killed(Exception):
    pass


def cut_and_resume(cls: Any, config: Any, dataset: Any, root: Path, stage: str, at: int = 15, every: int = 10) -> dict:
    """Runs `root/cut` (killed at step `at` of `stage`, then resumed) and `root/straight`; returns the resumed
    run's record, after checking that it picked up from the last mid-stage checkpoint."""

    def kill(at_stage: str, step: int) -> None:
        if at_stage == stage and step == at:
            raise Killed

    with pytest.raises(Killed):
        cls.for_dataset(dataset, config).fit(dataset, root / "cut",
                                             hooks=TrainHooks(checkpoint_every=every, eval_every=at, on_eval=kill))
    assert (root / "cut" / f"{stage}.partial.pt").exists()
    resumed = cls.for_dataset(dataset, config).fit(dataset, root / "cut", hooks=TrainHooks(checkpoint_every=every))
    assert resumed["stages"][stage]["resumed_at"] == at // every * every
    cls.for_dataset(dataset, config).fit(dataset, root / "straight", hooks=TrainHooks(checkpoint_every=every))
    return resumed


def same_checkpoints(root: Path, name: str, keys: tuple[str, ...]) -> bool:
    """Whether `name`.pt of the cut and the straight run hold identical tensors under `keys`."""
    a = torch.load(root / "cut" / f"{name}.pt", weights_only=True)
    b = torch.load(root / "straight" / f"{name}.pt", weights_only=True)
    return all(torch.equal(a[key][p], b[key][p]) for key in keys for p in a[key])


def check_acting(algo: Any, dataset: Any, workdir: Path) -> None:
    """`algo`, fitted into `workdir`: 7 actions at once, inside the bounds, equal under the same seed and
    equal again from the checkpoints."""
    obs = dataset.transitions.observations[:7]
    algo.seed(3)
    a = algo.act(obs)
    algo.seed(3)
    assert a.shape == (7, dataset.transitions.action_dim) and np.array_equal(a, algo.act(obs))
    assert np.all(a >= dataset.action_space.low) and np.all(a <= dataset.action_space.high)
    loaded = type(algo).load(workdir, dataset)
    loaded.seed(3)
    assert np.array_equal(loaded.act(obs), a)


def check_selection(algo: Any, dataset: Any, score: Any, behaviour: Any, critic: torch.nn.Module, **fixed: Any) -> None:
    """An algorithm acting by picking among its behaviour model's candidates (SfBC, IDQL, Diffusion-QL),
    with `config.temperature`: at temperature 0 the pick ignores the critic (so its actions are the behaviour
    model's: the same whatever `score` says, and distributed as `behaviour(obs, generator)`); as the
    temperature rises the picked action's score never falls, state by state (the candidates and the Gumbel
    noise are the same under one seed). `critic`: the network behind `score`; `fixed`: other config values."""
    import copy
    import dataclasses

    from envs.toy.distance import sliced_wasserstein

    obs = dataset.transitions.observations[:1].repeat(1000, 1).numpy()
    base = algo.config

    def act(temperature: float, seed: int = 0) -> np.ndarray:
        algo.config = dataclasses.replace(base, temperature=temperature, **fixed)
        algo.seed(seed)
        return algo.act(obs)

    try:
        t = torch.as_tensor(obs)
        picked = [torch.as_tensor(act(temp)) for temp in (0.0, 1.0, 10.0, 100.0, 1e6)]
        with torch.no_grad():
            scores = [score(t, a) for a in picked]
        for low, high in zip(scores, scores[1:]):
            assert (high >= low - 1e-5).all()
        assert float(scores[-1].mean()) > float(scores[0].mean())
        zero = [act(0.0, seed) for seed in range(3)]
        saved = copy.deepcopy(critic.state_dict())
        with torch.no_grad():
            for p in critic.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
        assert np.array_equal(act(0.0, 0), zero[0]), "at temperature 0 the pick depended on the critic"
        critic.load_state_dict(saved)
        gen = torch.Generator().manual_seed(7)
        own = [algo.clip(behaviour(t, gen).detach()) for _ in range(4)]
        floor = np.mean([sliced_wasserstein(own[i], own[i + 1], seed=i) for i in range(3)])
        distance = np.mean([sliced_wasserstein(zero[i], own[i], seed=i) for i in range(3)])
        assert distance < 2 * floor, (distance, floor)
    finally:
        algo.config = base


def first_action_bandit(dataset: Any, n: int = 2048, seed: int = 0) -> Any:
    """`dataset`'s spaces with a one-step task whose better actions are known: one state (zeros), actions uniform
    in the box, reward = the action's first coordinate, every step terminal (so Q_0 is that coordinate)."""
    import dataclasses

    from envs.transitions import Transitions

    obs_dim, act_dim = dataset.transitions.obs_dim, dataset.transitions.action_dim
    actions = np.random.default_rng(seed).uniform(-1, 1, (n, act_dim))
    obs = np.zeros((n, obs_dim))
    t = Transitions.from_arrays(observations=obs, actions=actions, rewards=actions[:, 0], next_observations=obs,
                                terminals=np.ones(n), timeouts=np.zeros(n), episode_starts=np.arange(n + 1))
    return dataclasses.replace(dataset, transitions=t)


def offset_bandit(n: int = 4096, seed: int = 0, offset: float = 100.0) -> Any:
    """Two states far from the origin (one-hot + `offset`); a ~ U[-1, 1]; r = a in state 1 and -a in state 0; every
    step ends the episode. The better action is +1 in state 1 and -1 in state 0; behaviour cloning gives 0 in both."""
    from gymnasium import spaces

    from envs.dataset import OfflineDataset
    from envs.transitions import Transitions

    rng = np.random.default_rng(seed)
    s = rng.integers(0, 2, n)
    a = rng.uniform(-1, 1, n)
    obs = np.eye(2)[s] + offset
    t = Transitions.from_arrays(observations=obs, actions=a[:, None], rewards=np.where(s == 1, a, -a),
                                next_observations=obs, terminals=np.ones(n), timeouts=np.zeros(n),
                                episode_starts=np.arange(n + 1))
    box = spaces.Box(offset, offset + 1.0, (2,))
    return OfflineDataset(id="offset-bandit", source="minari", location="", transitions=t, observation_space=box,
                          action_space=spaces.Box(-1.0, 1.0, (1,)), raw_observation_space=box, observation_layout=(),
                          ref_min_score=None, ref_max_score=None, eval_env_spec=None)


def with_terminals(dataset: Any) -> Any:
    """The dataset with every other episode ending by termination instead of its time limit, so that the
    contract's runs train on both kinds of end (the generated mazes are continuing tasks: time limits only)."""
    t = dataset.transitions
    last = t.episode_starts[1:-1:2] - 1  # the last row of episodes 0, 2, 4, ...
    terminals, timeouts = t.terminals.clone(), t.timeouts.clone()
    terminals[last], timeouts[last] = 1.0, 0.0
    return dataclasses.replace(dataset, transitions=dataclasses.replace(t, terminals=terminals, timeouts=timeouts))


_CHANCE: dict = {}  # a random policy's scores per (dataset, its size, episodes), made once per process


def assert_beats_random(algo: Any, dataset: Any, episodes: int = 20) -> None:
    """Regression on a tiny dataset: `algo` (trained) scores more than 8 normalised points and 3 standard errors above
    a uniformly random policy on the same env seeds; a policy that learned nothing scores like the random one."""
    from bench.harness.evaluation import evaluate

    class Uniform:
        rng = np.random.default_rng(0)

        def act(self, obs: np.ndarray) -> np.ndarray:
            return self.rng.uniform(dataset.action_space.low, dataset.action_space.high,
                                    (len(obs), dataset.transitions.action_dim)).astype(np.float32)

        def seed(self, seed: int) -> None:
            pass

    ours = evaluate(algo, dataset, episodes=episodes, seed=0).normalized
    key = (dataset.id, len(dataset.transitions), episodes)  # the random policy's scores depend on nothing else
    if key not in _CHANCE:
        _CHANCE[key] = evaluate(Uniform(), dataset, episodes=episodes, seed=0).normalized
    chance = _CHANCE[key]
    gap, se = ours.mean() - chance.mean(), np.sqrt(ours.var() / episodes + chance.var() / episodes)
    assert gap > 8 and gap > 3 * se, (ours.mean(), chance.mean(), se)
