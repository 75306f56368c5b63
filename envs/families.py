"""Which benchmark family a dataset belongs to, and the reward transform its published protocol uses.

The offline-RL papers this suite compares with (IQL, QGPO, Diffusion-QL, IDQL) train locomotion on
rewards scaled by 1000 / (max - min episode return) and AntMaze on r - 1; their temperatures
(QGPO's beta = 3, beta_Q = 1) only mean what the papers mean on rewards transformed the same way.
"""

from __future__ import annotations

from typing import Mapping

# (substring of the lower-cased id, family); the first match wins, so antmaze precedes ant
_FAMILIES = (("ogbench", "ogbench-manipulation"), ("cube-single", "ogbench-manipulation"),
             ("scene-play", "ogbench-manipulation"), ("puzzle-3x3", "ogbench-manipulation"),
             ("antmaze", "antmaze"), ("pointmaze", "pointmaze"), ("maze2d", "maze2d"), ("kitchen", "kitchen"),
             ("pen", "adroit"), ("door", "adroit"), ("hammer", "adroit"), ("relocate", "adroit"),
             ("halfcheetah", "locomotion"), ("hopper", "locomotion"), ("walker2d", "locomotion"),
             ("ant", "locomotion"), ("humanoid", "locomotion"))

# the transform each family's published protocol applies; families not named here use none
FAMILY_TRANSFORMS = {"locomotion": "locomotion", "antmaze": "antmaze"}


# families whose data is one continuing stream cut at each goal reached (D4RL's maze2d, PointMaze): the next
# episode is the same trajectory going on, so a Monte-Carlo return runs across the cut (the official SfBC
# maze2d loader's rule); cut there, a return would pay dawdling away from the goal
CONTINUING_FAMILIES = ("maze2d", "pointmaze")


# envs alive at once in a batched evaluation, for families whose envs are heavy: an OGBench manipulation env
# holds about 160 MB (measured here), so 3 scales x 100 episodes at once would need some 48 GB
MAX_VECTOR_ENVS = {"ogbench-manipulation": 25}
# every other family: a PointMaze env holds about 12 MiB, so an unbounded `--episodes 10000` would build some
# 120 GB of envs after training; at most this many at once (no published protocol evaluates more episodes)
DEFAULT_MAX_VECTOR_ENVS = 100


def max_vector_envs(dataset: str) -> int:
    """How many of the dataset's eval envs may run at once; more episodes run in waves of that many."""
    return MAX_VECTOR_ENVS.get(family(dataset), DEFAULT_MAX_VECTOR_ENVS)


def waves_always(dataset: str) -> bool:
    """Whether the family has a limit of its own (then it is part of every run's protocol, even where it does
    not bind); the default limit is recorded only for runs it cuts into waves."""
    return family(dataset) in MAX_VECTOR_ENVS


def family(dataset: str) -> str:
    """locomotion, antmaze, pointmaze, maze2d, kitchen, adroit, ogbench-manipulation or other, read from the
    dataset id or path."""
    name = dataset.lower().replace("\\", "/").rsplit("/datasets/", 1)[-1]
    for key, group in _FAMILIES:
        if key in name:
            return group
    return "other"


def is_generated(dataset: str) -> bool:
    return dataset.lower().startswith("diffbench/")


def default_reward_transform(dataset: str, card: Mapping | None = None) -> str:
    """The family's transform; a generated dataset's recipe (its card's `reward_transform`) overrides it,
    and generated data whose recipe names none gets none."""
    if card and card.get("reward_transform"):
        return str(card["reward_transform"])
    if is_generated(dataset):
        return "none"
    return FAMILY_TRANSFORMS.get(family(dataset), "none")


_QUALITIES = ("medium-replay", "medium-expert", "full-replay", "medium", "expert", "random")


def locomotion_task(dataset: str) -> tuple[str, str] | None:
    """(env, quality) of a locomotion dataset, e.g. ("hopper", "medium-replay") for D4RL's hopper-medium-replay-v2
    or the generated diffbench/hopper/medium-replay-small-v0: the key of the papers' per-dataset settings tables.
    None where the family is not locomotion or the quality is not one of D4RL's."""
    if family(dataset) != "locomotion":
        return None
    name = dataset.lower().replace("\\", "/").rsplit("/datasets/", 1)[-1]
    env = next((e for e in ("halfcheetah", "hopper", "walker2d", "ant", "humanoid") if e in name), None)
    quality = next((q for q in _QUALITIES if q in name.split(env, 1)[-1]), None) if env else None
    return (env, quality) if env and quality else None
