"""Single-task views of OGBench manipulation data, with OGBench's own task definitions.

An id `<base>-singletask[-task<k>]-v0` names the play data `<base>-v0` relabelled for task k (no suffix:
the env's default task), the way `ogbench.make_env_and_datasets` does it: `ogbench.relabel_utils`
computes, from each transition's current simulator state, the reward (number of the task's subgoals
met, minus their count) and the success; a success state ends the value recursion (OGBench's mask).
The evaluation env is `<env>-singletask[-task<k>]-v0`; the score is the success rate (x100).

Bases are the play data made here (`diffbench/ogbench/<env>-play[-small]-v0`, Minari) or OGBench's
official files on disk (`<env>-play-v0`, its `.npz` in OGBench's data directory, ~/.ogbench/data).
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from envs.dataset import OfflineDataset
from envs.errors import DatasetError, DatasetNotFoundError
from envs.ogbench import require
from envs.ogbench.play import ENVS

PATTERN = re.compile(r"^(?P<base>(?:diffbench/ogbench/)?(?P<env>cube-single|scene|puzzle-3x3)-play(?:-small)?)"
                     r"-singletask(?:-task(?P<task>[1-5]))?-v0$")
TASKS = (None, 1, 2, 3, 4, 5)


def parse(name: str) -> tuple[str, str, int | None] | None:
    """(base dataset id, env, task) of a single-task id, else None."""
    m = PATTERN.match(name)
    if m is None:
        return None
    return m["base"] + "-v0", m["env"], int(m["task"]) if m["task"] else None


def eval_env_id(env: str, task: int | None) -> str:
    return f"{env}-singletask{'' if task is None else f'-task{task}'}-v0"


def official_dir() -> Path:
    """OGBench's download directory (its DEFAULT_DATASET_DIR)."""
    return Path(os.environ.get("OGBENCH_DATASET_DIR", "~/.ogbench/data")).expanduser()


def relabel(env: str, task: int | None, qpos: np.ndarray, button_states: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray, int]:
    """(rewards, successes, the task's number) of states with simulator state `qpos` (and buttons), by OGBench's
    own relabelling; with no task given, the env's default one (cube-single and scene: 2, puzzle-3x3: 4)."""
    require()
    from ogbench.relabel_utils import relabel_dataset

    name = eval_env_id(env, task)
    task_env = gym.make(name)
    data = {"qpos": qpos}
    if button_states is not None:
        data["button_states"] = button_states
    try:
        relabel_dataset(name, task_env, data)
        number = int(task_env.unwrapped.cur_task_id)
    finally:
        task_env.close()
    return data["rewards"].astype(np.float32), 1.0 - data["masks"].astype(np.float32), number


def view(base: OfflineDataset, states: dict[str, np.ndarray], name: str, env: str, task: int | None) -> OfflineDataset:
    """`base` relabelled for the task; `states[k]`: per transition, the simulator state of its first observation."""
    n = len(base.transitions)
    for key, arr in states.items():
        if len(arr) != n:
            raise DatasetError(f"{base.id}: {key} has {len(arr)} rows for {n} transitions")
    require()
    rewards, success, number = relabel(env, task, states["qpos"], states.get("button_states"))
    t = replace(base.transitions, rewards=torch.from_numpy(rewards),
                terminals=torch.from_numpy(success))  # OGBench's mask: no bootstrap from a success state
    return replace(base, id=name, transitions=t, ref_min_score=None, ref_max_score=None,
                   eval_env_spec=gym.spec(eval_env_id(env, task)), eval_env_note="", score="success",
                   metadata=base.metadata | {"singletask": {"base": base.id, "env": env, "task": number,
                                                            "default_task": task is None,
                                                            "successes_in_data": float(success.mean())}})


def episode_states(mds, where: str) -> dict[str, np.ndarray]:
    """qpos (and button states) of every transition's first observation, from a Minari dataset's infos."""
    out: dict[str, list[np.ndarray]] = {}
    for ep in mds.iterate_episodes():
        infos = ep.infos or {}
        if "qpos" not in infos:
            raise DatasetError(f"{where} keeps no simulator states (infos qpos) per observation; single-task "
                               "rewards need them: regenerate it with `diffbench datasets generate`")
        for key in ("qpos", "button_states"):
            if key in infos:
                out.setdefault(key, []).append(np.asarray(infos[key])[:-1])
    return {k: np.concatenate(v) for k, v in out.items()}


def load_official(name: str, env: str, task: int | None, base: str) -> OfflineDataset:
    """OGBench's own file for `base` (`<env>-play-v0.npz`), relabelled as OGBench does."""
    require()
    from ogbench.utils import load_dataset as og_load

    from envs.spaces import flat_layout
    from envs.transitions import Transitions

    path = official_dir() / f"{base}.npz"
    if not path.is_file():
        raise DatasetNotFoundError(f"{name}: OGBench's file {path} is not on disk; diffbench never downloads. Copy it "
                                   f"there (or set OGBENCH_DATASET_DIR), or generate diffbench/ogbench/{base}")
    try:
        d = og_load(str(path), compact_dataset=False, add_info=True)
    except Exception as exc:
        raise DatasetError(f"cannot read OGBench's file {path} ({type(exc).__name__}: {exc})") from None
    ends = d["terminals"].astype(bool)  # OGBench's terminals mark where each stored trajectory ends
    starts = np.append(np.flatnonzero(np.concatenate([[True], ends[:-1]])), len(ends))
    t = Transitions.from_arrays(observations=d["observations"], actions=d["actions"], rewards=np.zeros(len(ends)),
                                next_observations=d["next_observations"], terminals=np.zeros(len(ends)),
                                timeouts=ends.astype(np.float32), episode_starts=starts)
    task_env = gym.make(eval_env_id(env, task))
    obs_space, act_space = task_env.observation_space, task_env.action_space
    task_env.close()
    base_ds = OfflineDataset(id=base, source="ogbench-npz", location=str(path), transitions=t,
                             observation_space=obs_space, action_space=act_space, raw_observation_space=obs_space,
                             observation_layout=flat_layout(obs_space), ref_min_score=None, ref_max_score=None,
                             eval_env_spec=None, metadata={"official": True})
    states = {k: d[k] for k in ("qpos", "button_states") if k in d}
    return view(base_ds, states, name, env, task)


__all__ = ["ENVS", "TASKS", "parse", "eval_env_id", "relabel", "view", "episode_states", "load_official"]
