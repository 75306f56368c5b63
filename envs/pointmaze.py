"""D4RL-style PointMaze datasets, made the way D4RL's maze2d and Minari's `D4RL/pointmaze/*-v2` were.

A waypoint planner over the maze grid feeds a PD controller (P=10, D=-1) whose actions get
Gaussian noise (std 0.5) and are clipped to [-1, 1]. The data env is a continuing task: on reaching
the goal (within 0.45) the env draws a new one, and the episode is cut there (a truncation, not a
terminal). References for normalised scores come from a single-goal eval env, as Minari's: the
random policy's and the noise-free controller's mean return.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import io
from dataclasses import asdict, dataclass
from typing import Callable

import gymnasium as gym
import numpy as np
from minari.data_collector import EpisodeBuffer
from tqdm import tqdm

from envs.errors import DatasetError
from envs.maze_planner import shortest_path

with contextlib.redirect_stderr(io.StringIO()):  # its import prints a notice on Adroit envs, which no recipe uses
    import gymnasium_robotics
gym.register_envs(gymnasium_robotics)

G = "g"
# Single-goal maps of the eval envs; every other free cell is a reset location (Minari's maps).
EVAL_MAPS = {
    "umaze": [[1, 1, 1, 1, 1], [1, G, 0, 0, 1], [1, 1, 1, 0, 1], [1, 0, 0, 0, 1], [1, 1, 1, 1, 1]],
    "medium": [
        [1, 1, 1, 1, 1, 1, 1, 1], [1, 0, 0, 1, 1, 0, 0, 1], [1, 0, 0, 1, 0, 0, 0, 1], [1, 1, 0, 0, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1], [1, 0, 1, 0, 0, 1, 0, 1], [1, 0, 0, 0, 1, 0, G, 1], [1, 1, 1, 1, 1, 1, 1, 1],
    ],
    "large": [
        [1] * 12, [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1], [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
        [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1], [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1], [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1], [1, 0, 0, 1, 0, 0, 0, 1, 0, G, 0, 1], [1] * 12,
    ],
}
ENV_IDS = {"umaze": "PointMaze_UMaze-v3", "medium": "PointMaze_Medium-v3", "large": "PointMaze_Large-v3"}


@dataclass(frozen=True)
class ControllerConfig:
    p_gain: float = 10.0
    d_gain: float = -1.0
    waypoint_threshold: float = 0.1
    waypoint_jitter: float = 0.2  # intermediate waypoints move by -U(0, jitter) per axis
    action_noise: float = 0.5


@dataclass(frozen=True)
class PointMazeRecipe:
    maze: str
    reward_type: str  # "sparse" or "dense"
    steps: int  # Minari's pointmaze datasets hold 1,000,000 steps
    ref_episodes: int = 100  # episodes averaged for each reference score, as Minari does

    @property
    def env_id(self) -> str:
        return ENV_IDS[self.maze].replace("-v3", "Dense-v3") if self.reward_type == "dense" else ENV_IDS[self.maze]

    def data_env(self) -> gym.Env:
        return gym.make(self.env_id, continuing_task=True, reset_target=True,
                        max_episode_steps=self.steps + 1, disable_env_checker=True)

    def eval_env(self) -> gym.Env:
        return gym.make(self.env_id, maze_map=EVAL_MAPS[self.maze], continuing_task=True, reset_target=False)


RECIPES: dict[str, PointMazeRecipe] = {
    f"diffbench/pointmaze/{maze}{'-dense' if reward == 'dense' else ''}-v0": PointMazeRecipe(maze, reward, 1_000_000)
    for maze in ENV_IDS
    for reward in ("sparse", "dense")
}
# Small enough to make in under a minute on two cores. The dense one is the quick benchmark's
# default: with sparse rewards the data pays one reward per episode (at arrival, where the episode
# is cut), which tells Q_0 little at a small budget; the dense reward exp(-distance) pays every step.
RECIPES["diffbench/pointmaze/umaze-small-v0"] = PointMazeRecipe("umaze", "sparse", 100_000)
RECIPES["diffbench/pointmaze/umaze-dense-small-v0"] = PointMazeRecipe("umaze", "dense", 100_000)


class WaypointController:
    """Follows grid waypoints to the env's current goal; replans whenever the goal moves."""

    def __init__(self, maze, cfg: ControllerConfig, rng: np.random.Generator):
        self.maze, self.cfg, self.rng = maze, cfg, rng
        self.free = np.asarray(maze.maze_map) != 1
        self.goal_xy: np.ndarray | None = None

    def __call__(self, obs: dict) -> np.ndarray:
        pos, vel, goal = obs["achieved_goal"], obs["observation"][2:], obs["desired_goal"]
        if self.goal_xy is None or np.linalg.norm(self.goal_xy - goal) > 1e-3:
            self.goal_xy = goal.copy()
            start = tuple(int(i) for i in self.maze.cell_xy_to_rowcol(pos))
            end = tuple(int(i) for i in self.maze.cell_xy_to_rowcol(goal))
            self.path, self.index = shortest_path(start, end, self.free), 0
            self._advance()
        if np.linalg.norm(self.target - pos) <= self.cfg.waypoint_threshold and self.index < len(self.path) - 1:
            self._advance()
        return self.cfg.p_gain * (self.target - pos) + self.cfg.d_gain * vel

    def _advance(self) -> None:
        """Aim at the next cell's centre (jittered), or at the goal itself once in its cell's approach."""
        self.index = min(self.index + 1, len(self.path) - 1)
        if self.index == len(self.path) - 1:
            self.target = self.goal_xy
        else:
            jitter = self.rng.uniform(size=2) * self.cfg.waypoint_jitter
            self.target = self.maze.cell_rowcol_to_xy(np.array(self.path[self.index])) - jitter


def collect(recipe: PointMazeRecipe, steps: int, seed: int, cfg: ControllerConfig, progress: bool) -> list[EpisodeBuffer]:
    """Run the noisy controller for `steps` steps, cutting an episode at each goal reached."""
    env = recipe.data_env()
    rng = np.random.default_rng(seed)
    controller = WaypointController(env.unwrapped.maze, cfg, rng)
    obs, _ = env.reset(seed=seed)
    episodes: list[EpisodeBuffer] = []
    ep = _new_episode(obs)
    for t in tqdm(range(steps), desc=f"collect {recipe.env_id}", disable=not progress, unit="step", mininterval=1.0):
        action = controller(obs) + rng.normal(scale=cfg.action_noise, size=2)
        action = np.clip(action, -1.0, 1.0).astype(np.float32)
        obs, reward, terminated, _, info = env.step(action)
        success = bool(info["success"])
        last = t == steps - 1
        ep["actions"].append(action)
        ep["rewards"].append(float(reward))
        ep["terminations"].append(bool(terminated))
        ep["truncations"].append(success or last)  # goal reached (continuing task) or data budget spent
        ep["success"].append(success)
        _append_obs(ep, obs)
        if success or terminated or last:
            episodes.append(_to_buffer(len(episodes), ep, seed if not episodes else None))
            # The env has already drawn the next goal; the next episode starts here, aiming at it.
            start = {k: v.copy() for k, v in obs.items()}
            start["desired_goal"] = env.unwrapped.goal.copy()
            ep = _new_episode(start)
    env.close()
    return episodes


def _new_episode(obs: dict) -> dict:
    ep = {k: [] for k in ("actions", "rewards", "terminations", "truncations")}
    ep["obs"] = {k: [] for k in obs}
    ep["success"] = [False]  # Minari stores one info per observation, the reset's first
    _append_obs(ep, obs)
    return ep


def _append_obs(ep: dict, obs: dict) -> None:
    for k, v in obs.items():
        ep["obs"][k].append(np.array(v, dtype=np.float64))


def _to_buffer(index: int, ep: dict, seed: int | None) -> EpisodeBuffer:
    return EpisodeBuffer(
        id=index,
        seed=seed,
        observations={k: np.stack(v) for k, v in ep["obs"].items()},
        actions=np.stack(ep["actions"]),
        rewards=np.asarray(ep["rewards"], dtype=np.float64),
        terminations=np.asarray(ep["terminations"], dtype=bool),
        truncations=np.asarray(ep["truncations"], dtype=bool),
        infos={"success": np.asarray(ep["success"], dtype=bool)},
    )


def average_return(env: gym.Env, policy: Callable[[dict], np.ndarray], episodes: int, seed: int) -> float:
    """Mean undiscounted return over `episodes`; seeded once at the first reset, as Minari does."""
    returns = []
    obs, _ = env.reset(seed=seed)
    for _ in range(episodes):
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        obs, _ = env.reset()
    return float(np.mean(returns))


def reference_scores(recipe: PointMazeRecipe, episodes: int, seed: int, cfg: ControllerConfig) -> tuple[float, float]:
    """(random policy, noise-free controller) mean returns on the single-goal eval env."""
    env = recipe.eval_env()
    env.action_space.seed(seed)
    random_score = average_return(env, lambda _: env.action_space.sample(), episodes, seed)
    expert = WaypointController(env.unwrapped.maze, cfg, np.random.default_rng(seed))
    expert_score = average_return(env, lambda o: np.clip(expert(o), -1.0, 1.0).astype(np.float32), episodes, seed)
    env.close()
    return random_score, expert_score


def collector_score(recipe: PointMazeRecipe, episodes: int, seed: int, cfg: ControllerConfig) -> float:
    """Mean return of the data's own collector, the controller with its N(0, action_noise^2) noise, on the
    single-goal eval env: what imitating the data can reach (the data's goal-to-goal segments are no eval episodes)."""
    env = recipe.eval_env()
    rng = np.random.default_rng(seed + 1)
    noisy = WaypointController(env.unwrapped.maze, cfg, rng)
    policy = lambda o: np.clip(noisy(o) + rng.normal(scale=cfg.action_noise, size=2), -1.0, 1.0).astype(np.float32)  # noqa: E731
    score = average_return(env, policy, episodes, seed)
    env.close()
    return score


def build(dataset_id: str, steps: int | None, seed: int, ref_episodes: int | None, progress: bool) -> dict:
    """Collect a recipe's data; returns the arguments `minari_writer.write_dataset` takes."""
    if dataset_id not in RECIPES:
        raise DatasetError(f"no recipe generates {dataset_id!r}; generatable ids: {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[dataset_id]
    steps = recipe.steps if steps is None else steps
    ref_episodes = recipe.ref_episodes if ref_episodes is None else ref_episodes
    if steps < 1 or ref_episodes < 1:
        raise DatasetError(f"steps and ref_episodes must be positive (got {steps}, {ref_episodes})")
    cfg = ControllerConfig()
    buffers = collect(recipe, steps, seed, cfg, progress)
    ref_min, ref_max = reference_scores(recipe, ref_episodes, seed, cfg)
    collector = collector_score(recipe, ref_episodes, seed, cfg)
    card = {
        "dataset_id": dataset_id,
        "generator": "envs.pointmaze (diffbench)",
        "recipe": asdict(recipe) | {"env_id": recipe.env_id},
        "steps": steps,
        "custom_size": steps != recipe.steps,
        "seed": seed,
        "episodes": len(buffers),
        "controller": asdict(cfg),
        "ref_min_score": ref_min,
        "ref_max_score": ref_max,
        "ref_episodes": ref_episodes,
        "collector_return": collector,
        "data_score": 100.0 * (collector - ref_min) / (ref_max - ref_min),
        "data_score_how": f"the data's collector (the controller with its action noise) on the eval env, {ref_episodes} "
                          "episodes",
        "versions": {p: md.version(p) for p in ("diffbench", "minari", "gymnasium", "gymnasium-robotics", "mujoco", "numpy")},
    }
    description = (
        f"PointMaze {recipe.maze} ({recipe.reward_type} reward), {steps} steps from a grid waypoint planner and a "
        f"PD controller (P={cfg.p_gain}, D={cfg.d_gain}) with N(0, {cfg.action_noise}^2) action noise, seed {seed}. "
        f"Continuing task with a new goal on arrival; episodes end at each goal reached (truncation). "
        f"References: random policy and noise-free controller on the single-goal eval env, {ref_episodes} episodes each."
    )
    eval_env = recipe.eval_env()
    return dict(
        buffers=buffers,
        card=card,
        env=recipe.data_env(),
        eval_env=eval_env,
        algorithm_name="grid waypoint planner + noisy PD controller",
        author="diffbench",
        author_email="diffbench@localhost",
        code_permalink="diffbench envs/pointmaze.py",
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        num_episodes_average_score=ref_episodes,
        description=description,
    )
