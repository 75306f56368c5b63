"""OGBench's "play" datasets, made with the `ogbench` package's own oracles and settings.

As OGBench's data-generation script for manipulation (`data_gen_scripts/generate_manipspace.py`,
`--dataset_type=play`): the non-Markovian plan oracles (cube, button, drawer, window) with action noise
0.1 and noise smoothing 0.5, actions clipped to [-1, 1]; each episode runs 1001 env steps in the
data-collection mode, a new target drawn whenever the oracle finishes one (cube stacking probability 0
for cube-single); the puzzle's button oracle keeps the gripper closed; a scene episode that pushes the
cube out of view (too far right, or too far left outside the drawer) is discarded and redone. OGBench
stores 1001 steps per episode of which 1000 are transitions (the last step has no next state): so
here, 1000 transitions per episode, 1000 episodes (1M) or 100 (`-small`, 100k). OGBench's 10%
validation episodes are not made (offline RL does not use them).

Per observation the episode also keeps the simulator state (`qpos`, `qvel`, and `button_states`
where there are buttons), from which `envs.ogbench.singletask` computes each task's reward. The
oracles draw from NumPy's global generator (as in OGBench), which is seeded here and restored after.
"""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import asdict, dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from minari.data_collector import EpisodeBuffer
from tqdm import tqdm

from envs.errors import DatasetError
from envs.ogbench import require

ENVS = {"cube-single": "cube-single-v0", "scene": "scene-v0", "puzzle-3x3": "puzzle-3x3-v0"}
EPISODE_STEPS = 1001  # OGBench's max_episode_steps for these datasets
NOISE, NOISE_SMOOTHING = 0.1, 0.5


@dataclass(frozen=True)
class PlayRecipe:
    env: str
    episodes: int
    episode_steps: int = EPISODE_STEPS

    @property
    def env_id(self) -> str:
        return ENVS[self.env]


RECIPES: dict[str, PlayRecipe] = {
    f"diffbench/ogbench/{env}-play{suffix}-v0": PlayRecipe(env, episodes)
    for env in ENVS for suffix, episodes in (("", 1000), ("-small", 100))
}


def make_data_env(recipe: PlayRecipe) -> gym.Env:
    require()

    return gym.make(recipe.env_id, terminate_at_goal=False, mode="data_collection",
                    max_episode_steps=recipe.episode_steps)


def _oracles(env: gym.Env, name: str) -> dict[str, Any]:
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

    kw = dict(env=env, noise=NOISE, noise_smoothing=NOISE_SMOOTHING)
    if name == "cube-single":
        return {"cube": CubePlanOracle(**kw)}
    if name == "scene":
        return {"cube": CubePlanOracle(**kw), "button": ButtonPlanOracle(**kw), "drawer": DrawerPlanOracle(**kw),
                "window": WindowPlanOracle(**kw)}
    return {"button": ButtonPlanOracle(**kw, gripper_always_closed=True)}


def _healthy(name: str, qpos: np.ndarray) -> bool:
    """OGBench's scene check: the cube stays in view unless it is in the drawer."""
    if name != "scene":
        return True
    xyz = qpos[:, 14:17]
    too_right = (xyz[:, 1] >= 0.29).any()
    too_left = ((xyz[:, 1] <= -0.3) & ((xyz[:, 2] < 0.06) | (xyz[:, 2] > 0.08))).any()
    return not (too_right or too_left)


def _episode(env: gym.Env, name: str, oracles: dict[str, Any], steps: int, seed: int | None) -> dict[str, Any]:
    ob, info = env.reset(seed=seed)
    agent = oracles[info["privileged/target_task"]]
    agent.reset(ob, info)
    buttons = "button_states" in info
    rec: dict[str, list] = {"obs": [ob], "actions": [], "qpos": [info["qpos"]], "qvel": [info["qvel"]]}
    if buttons:
        rec["button_states"] = [info["button_states"]]
    for _ in range(steps):
        action = np.clip(np.asarray(agent.select_action(ob, info)), -1, 1).astype(np.float32)
        ob, _, _, _, info = env.step(action)
        if agent.done:  # a new target once the oracle is done with this one (single cube: never stacked)
            agent_ob, agent_info = env.unwrapped.set_new_target(p_stack=0.0 if name == "cube-single" else 0.5)
            agent = oracles[agent_info["privileged/target_task"]]
            agent.reset(agent_ob, agent_info)
        rec["obs"].append(ob)
        rec["actions"].append(action)
        rec["qpos"].append(info["qpos"])
        rec["qvel"].append(info["qvel"])
        if buttons:
            rec["button_states"].append(info["button_states"])
    return rec


def collect(recipe: PlayRecipe, episodes: int, seed: int, progress: bool = False,
            episode_steps: int | None = None, stats: dict[str, int] | None = None) -> list[EpisodeBuffer]:
    """`episodes` play episodes of `episode_steps - 1` transitions each; `stats` gets the number of episodes
    the health check rejected and replaced (scene's cube leaving the view), for the card."""
    steps = (episode_steps or recipe.episode_steps) - 1  # OGBench's last step has no next state
    if episodes < 1 or steps < 1:
        raise DatasetError(f"episodes must be >= 1 and episode_steps >= 2, got {episodes} and {steps + 1}")
    env = make_data_env(recipe)
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        oracles = _oracles(env, recipe.env)
        buffers, first, rejected = [], True, 0
        for i in tqdm(range(episodes), desc=f"collect {recipe.env_id}", disable=not progress, unit="episode"):
            while True:
                rec = _episode(env, recipe.env, oracles, steps, seed if first else None)
                first = False
                if _healthy(recipe.env, np.asarray(rec["qpos"])):
                    break
                rejected += 1
            buffers.append(_buffer(i, rec, seed if i == 0 else None))
    finally:
        np.random.set_state(saved)
        env.close()
    if stats is not None:
        stats["rejected_episodes"] = rejected
    return buffers


def _buffer(index: int, rec: dict[str, list], seed: int | None) -> EpisodeBuffer:
    n = len(rec["actions"])
    truncated = np.zeros(n, dtype=bool)
    truncated[-1] = True  # OGBench's episodes end by the step budget: no terminal state
    infos = {k: np.asarray(rec[k], dtype=np.int64 if k == "button_states" else np.float64)
             for k in ("qpos", "qvel", "button_states") if k in rec}
    return EpisodeBuffer(id=index, seed=seed, observations=np.asarray(rec["obs"], dtype=np.float32),
                         actions=np.stack(rec["actions"]), rewards=np.zeros(n), terminations=np.zeros(n, dtype=bool),
                         truncations=truncated, infos=infos)


def build(dataset_id: str, episodes: int | None, seed: int, progress: bool, episode_steps: int | None = None
          ) -> dict[str, Any]:
    """Collect a recipe's episodes; returns the arguments `minari_writer.write_dataset` takes."""
    if dataset_id not in RECIPES:
        raise DatasetError(f"no recipe generates {dataset_id!r}; generatable ids: {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[dataset_id]
    episodes = recipe.episodes if episodes is None else episodes
    stats: dict[str, int] = {}
    buffers = collect(recipe, episodes, seed, progress, episode_steps, stats)
    total = sum(len(b.actions) for b in buffers)
    card = {"dataset_id": dataset_id, "generator": "envs.ogbench.play (diffbench)", "recipe": asdict(recipe),
            "env_id": recipe.env_id, "steps": total, "episodes": len(buffers), "seed": seed,
            "custom_size": episodes != recipe.episodes or (episode_steps or recipe.episode_steps) != recipe.episode_steps,
            "oracle": {"kind": "plan (OGBench play)", "noise": NOISE, "noise_smoothing": NOISE_SMOOTHING},
            "rejected_episodes": stats["rejected_episodes"],  # failed OGBench's health check, collected again
            "rewards": "zero here; each single-task view computes OGBench's task reward from qpos/button_states",
            "provenance": "OGBench's recipe and oracles, regenerated: same distribution, not OGBench's files",
            "versions": {p: md.version(p) for p in ("diffbench", "ogbench", "minari", "gymnasium", "mujoco", "numpy")}}
    description = (f"OGBench-style {recipe.env} play data: {len(buffers)} episodes x {total // max(len(buffers), 1)} "
                   f"transitions of OGBench's plan oracles (noise {NOISE}, smoothing {NOISE_SMOOTHING}), seed {seed}.")
    return dict(buffers=buffers, card=card, env=make_data_env(recipe), algorithm_name="OGBench plan oracles",
                author="diffbench", author_email="diffbench@localhost", code_permalink="diffbench envs/ogbench/play.py",
                description=description)
