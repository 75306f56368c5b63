"""Sweep specs: algorithms × datasets × seeds × an override grid, read from YAML.

```yaml
algorithms: [qgpo]                 # registered names
datasets: [diffbench/pointmaze/umaze-small-v0]
seeds: [0, 1, 2]
preset: cpu
overrides:                         # for every run; under an algorithm's name, for its runs only
  qgpo: {energy_steps: 2000}
grid: {beta: [3, 10]}              # one run per combination
episodes: 100
guidance_scales: [0, 1, 3]          # default: the algorithm's for the preset (QGPO paper: the official grid)
eval_every: 1000                   # learning-curve evaluations every that many gradient steps, besides
curve_points: 10                   # ... those at k/10 of each policy-making stage (default 10; 0 for tiny, quick)
reward_transform: locomotion       # default: the dataset family's (locomotion, antmaze, none)
selection_episodes: 10             # held-out episodes per scale that choose it (default: as episodes)
order: dataset                     # every algorithm on one dataset, then the next (default: algorithm by algorithm)
```
Every key is checked like an algorithm config: an unknown key or a value of the wrong type is one
error naming it. Names (algorithms, presets, config keys) are checked before anything runs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness.runner import RunSpec
from policies import config as cfg_tools
from policies import registry
from policies.errors import ConfigError


ORDERS = ("algorithm", "dataset")


@dataclass(frozen=True)
class SweepSpec:
    algorithms: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    preset: str = "cpu"
    overrides: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Any] = field(default_factory=dict)
    episodes: int | None = None
    guidance_scales: tuple[float, ...] | None = None
    eval_every: int = 0
    curve_points: int | None = None  # None: RunSpec's default for the preset
    curve_episodes: int = 10
    checkpoint_every: int = 1000
    eval_seed: int = 0
    reward_transform: str | None = None  # None: each dataset family's
    selection_episodes: int | None = None
    order: str = "algorithm"  # runs algorithm by algorithm, or "dataset": every algorithm on one dataset, then the next

    def runs(self) -> list[RunSpec]:
        if not self.algorithms or not self.datasets or not self.seeds:
            raise ConfigError("a sweep needs at least one entry in each of algorithms, datasets and seeds")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid.{key} must be a non-empty list of values, got {values!r}")
        keys = list(self.grid)
        combos = [dict(zip(keys, values)) for values in itertools.product(*(self.grid[k] for k in keys))]
        specs = [RunSpec(algorithm=algo, dataset=ds, seed=seed, preset=self.preset,
                         overrides={**self.overrides_for(algo), **combo}, episodes=self.episodes,
                         guidance_scales=self.guidance_scales if registry.get(algo).guided else None,
                         eval_every=self.eval_every, curve_points=self.curve_points,
                         curve_episodes=self.curve_episodes, checkpoint_every=self.checkpoint_every,
                         eval_seed=self.eval_seed, reward_transform=self.reward_transform,
                         selection_episodes=self.selection_episodes)
                 for algo in self.algorithms for ds in self.datasets for combo in combos for seed in self.seeds]
        if self.order not in ORDERS:
            raise ConfigError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.order == "dataset":  # a stable sort: within a dataset, the algorithms' order (shared stages first)
            specs.sort(key=lambda spec: self.datasets.index(spec.dataset))
        # a run whose preset is declared short of competence (the algorithm's everywhere, or every algorithm's on the
        # dataset's family) is shown but ranked nowhere: such runs go after all others, so that what the boards rank is
        # complete first (a stable sort keeps each part's order)
        specs.sort(key=self.is_short)
        for spec in specs:
            spec.config()  # unknown algorithm, preset or key: fail now, not an hour in
        return specs


    def short_of_competence(self) -> tuple[str, ...]:
        """The spec's algorithms whose preset is declared short of competence everywhere
        (`Algorithm.short_of_competence`)."""
        return tuple(a for a in self.algorithms if self.preset in registry.get(a).short_of_competence)

    def is_short(self, spec: RunSpec) -> bool:
        """Whether `spec`'s preset is declared short of competence on its dataset (`Algorithm.shortfall`)."""
        return registry.get(spec.algorithm).shortfall(spec.preset, spec.dataset) is not None

    def overrides_for(self, algorithm: str) -> dict[str, Any]:
        shared = {k: v for k, v in self.overrides.items() if k not in self.algorithms}
        own = self.overrides.get(algorithm, {})
        if not isinstance(own, dict):
            raise ConfigError(f"overrides.{algorithm} must be a mapping of {algorithm} config keys, got {own!r}")
        return {**shared, **own}


def load_sweep(path: Path) -> SweepSpec:
    data = cfg_tools.load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a YAML mapping with keys such as algorithms, datasets, seeds; "
                          f"got {type(data).__name__}")
    for key in ("algorithms", "datasets", "seeds"):  # a single name is a list of one
        if isinstance(data.get(key), (str, int)):
            data[key] = [data[key]]
    try:
        return cfg_tools.apply(SweepSpec(), data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
