"""Behaviour policies for the locomotion datasets: SAC (stable-baselines3, the library Minari's own
`mujoco/*` datasets were made with) on Gymnasium's MuJoCo v5 envs, with the actor saved along the
training curve and each checkpoint's return measured, so recipes can pick "random" (step 0),
"medium" (about a third of D4RL's expert return), the replay up to medium, and "expert".

Training is resumable: every `state_every` steps the learner's full state (networks, optimisers,
entropy coefficient, replay buffer, step counters) goes to `<out>/state/` as tensors and arrays, never
pickles, and a new invocation continues from it (the env restarts an episode there, so an
interrupted run is not bit-identical to an uninterrupted one; the card says whether it resumed).
"""

from __future__ import annotations

import csv
import importlib.metadata as md
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.errors import DatasetError
from envs.mujoco_warnings import quiet_mujoco_warnings
from envs.locomotion.actor import SquashedGaussianActor, from_sb3, save_actor
from envs.scores import d4rl_reference_table, normalized_score

ENVS = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}
STATE = "state"
CURVE = "curve.csv"


def env_id(name: str) -> str:
    if name not in ENVS:
        raise DatasetError(f"unknown locomotion env {name!r}; choose one of {', '.join(ENVS)}")
    return ENVS[name]


def d4rl_references(name: str) -> tuple[float, float]:
    """D4RL's (random, expert) reference returns for the env (the same for every level; D4RL used v2 envs)."""
    return d4rl_reference_table()[f"{name}-medium-v2"]


@dataclass(frozen=True)
class SacSettings:
    steps: int = 1_000_000
    seed: int = 0
    checkpoint_every: int = 10_000  # actor weights and their measured return
    state_every: int = 50_000  # the learner's full state, to resume from
    eval_episodes: int = 10
    learning_starts: int = 10_000  # RL Zoo's MuJoCo setting; otherwise stable-baselines3's SAC defaults

    def check(self) -> None:
        for name in ("steps", "checkpoint_every", "state_every", "eval_episodes"):
            if getattr(self, name) < 1:
                raise DatasetError(f"SAC: {name} must be >= 1, got {getattr(self, name)}")
        if self.state_every % self.checkpoint_every:
            raise DatasetError(f"SAC: state_every ({self.state_every}) must be a multiple of checkpoint_every "
                               f"({self.checkpoint_every})")


def rollout_return(actor: SquashedGaussianActor, env_name: str, episodes: int, seed: int) -> np.ndarray:
    """Undiscounted returns of the actor's stochastic actions (as the datasets record them), env i seeded seed + i."""
    quiet_mujoco_warnings()
    env = gym.make(env_id(env_name))
    rng = np.random.default_rng(seed)
    out = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(actor.act(obs, rng))
            total += float(reward)
            done = terminated or truncated
        out.append(total)
    env.close()
    return np.asarray(out)


def quiet(model):
    """An SB3 (or sbx) model that logs nowhere: without a logger of its own, every `learn` call makes a new
    /tmp/SB3-<time> folder, one per checkpoint chunk of a training run."""
    from stable_baselines3.common.logger import Logger

    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def _model(env_name: str, settings: SacSettings):
    from stable_baselines3 import SAC  # imported here: only training needs it

    quiet_mujoco_warnings()
    env = gym.make(env_id(env_name))
    return quiet(SAC("MlpPolicy", env, seed=settings.seed, learning_starts=settings.learning_starts, device="cpu",
                     verbose=0))


def _save_state(model, out: Path) -> None:
    """Everything the learner needs to continue, as tensors/arrays; written whole, then renamed."""
    tmp, final, old = out / f".{STATE}.tmp", out / STATE, out / f".{STATE}.old"
    for stale in (tmp, old):  # left by a process killed mid-save
        if stale.exists():
            shutil.rmtree(stale)
    tmp.mkdir(parents=True)
    buf = model.replay_buffer
    n = buf.buffer_size if buf.full else buf.pos
    np.savez(tmp / "replay.npz", observations=buf.observations[:n], next_observations=buf.next_observations[:n],
             actions=buf.actions[:n], rewards=buf.rewards[:n], dones=buf.dones[:n], timeouts=buf.timeouts[:n],
             pos=buf.pos, full=buf.full)
    torch.save({"policy": model.policy.state_dict(), "actor_opt": model.actor.optimizer.state_dict(),
                "critic_opt": model.critic.optimizer.state_dict(), "log_ent_coef": model.log_ent_coef.detach().clone(),
                "ent_opt": model.ent_coef_optimizer.state_dict(), "num_timesteps": model.num_timesteps,
                "n_updates": model._n_updates, "episode_num": model._episode_num}, tmp / "learner.pt")
    if final.exists():
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)


def _load_state(model, out: Path) -> None:
    state = out / STATE
    try:
        learner = torch.load(state / "learner.pt", map_location="cpu", weights_only=True)
        replay = np.load(state / "replay.npz")
    except Exception as exc:
        raise DatasetError(f"cannot resume SAC from {state} ({type(exc).__name__}: {exc}); delete it to start "
                           "over") from None
    model.policy.load_state_dict(learner["policy"])
    model.actor.optimizer.load_state_dict(learner["actor_opt"])
    model.critic.optimizer.load_state_dict(learner["critic_opt"])
    with torch.no_grad():
        model.log_ent_coef.copy_(learner["log_ent_coef"])
    model.ent_coef_optimizer.load_state_dict(learner["ent_opt"])
    model.num_timesteps, model._n_updates = int(learner["num_timesteps"]), int(learner["n_updates"])
    model._episode_num = int(learner["episode_num"])
    buf = model.replay_buffer
    n = len(replay["rewards"])
    for key in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        getattr(buf, key)[:n] = replay[key]
    buf.pos, buf.full = int(replay["pos"]), bool(replay["full"])


def read_curve(out: Path) -> list[dict[str, Any]]:
    path = Path(out) / CURVE
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: (float(v) if k not in ("file",) else v) for k, v in row.items()} for row in csv.DictReader(f)]


def _append_curve(out: Path, row: dict[str, Any]) -> None:
    path = out / CURVE
    new = not path.exists()
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def checkpoint_card(env_name: str, settings: SacSettings, step: int, returns: np.ndarray, resumed: bool,
                    seconds: float) -> dict[str, Any]:
    ref_min, ref_max = d4rl_references(env_name)
    return {"algorithm": "SAC (stable-baselines3, default hyperparameters, learning_starts "
                         f"{settings.learning_starts})", "env_id": env_id(env_name), "seed": settings.seed,
            "training_steps": step, "eval_episodes": len(returns), "eval_actions": "stochastic (as the datasets)",
            "return_mean": float(returns.mean()), "return_std": float(returns.std()),
            "d4rl_score": float(normalized_score(returns.mean(), ref_min, ref_max)),
            "d4rl_references": {"random": ref_min, "expert": ref_max,
                                "note": "D4RL's references were measured on the v2 envs; these returns are on v5"},
            "resumed": resumed, "training_seconds": seconds,
            "versions": {p: md.version(p) for p in ("stable-baselines3", "gymnasium", "mujoco", "torch")}}


def train(env_name: str, out: Path, settings: SacSettings = SacSettings(), log=print) -> list[dict[str, Any]]:
    """SAC for `settings.steps` steps into `out` (resuming what is there); returns the training curve."""
    settings.check()
    env_id(env_name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mine, meta = asdict(settings) | {"env": env_name}, out / "settings.json"
    if meta.exists():  # more steps may continue a run; any other setting makes it another run
        old = json.loads(meta.read_text())
        differ = sorted(k for k in mine if k != "steps" and old.get(k) != mine[k])
        if differ:
            raise DatasetError(f"{out} holds a SAC run with another {', '.join(differ)} ({old}); use another --out")
    meta.write_text(json.dumps(mine, indent=2))
    torch.set_num_threads(1)
    model = _model(env_name, settings)
    if not (out / STATE).exists() and (out / f".{STATE}.old").exists():  # killed between the two renames
        (out / f".{STATE}.old").rename(out / STATE)
    resumed = (out / STATE).exists()
    if resumed:
        _load_state(model, out)
        log(f"{env_name}: resumed at step {model.num_timesteps}")
    curve = [r for r in read_curve(out) if r["step"] <= model.num_timesteps]
    (out / CURVE).unlink(missing_ok=True)  # rows past the resumed state are made again
    for row in curve:
        _append_curve(out, row)
    if not curve:  # step 0: the randomly initialised actor, D4RL's "random" policy
        _checkpoint(model, env_name, out, settings, resumed, 0.0, log)
    seconds = float(curve[-1]["training_seconds"]) if curve else 0.0
    while model.num_timesteps < settings.steps:
        chunk = min(settings.checkpoint_every, settings.steps - model.num_timesteps)
        began = time.perf_counter()
        model.learn(total_timesteps=chunk, reset_num_timesteps=False)
        seconds += time.perf_counter() - began
        _checkpoint(model, env_name, out, settings, resumed, seconds, log)
        if model.num_timesteps % settings.state_every == 0 or model.num_timesteps >= settings.steps:
            _save_state(model, out)
    return read_curve(out)


def _checkpoint(model, env_name: str, out: Path, settings: SacSettings, resumed: bool, seconds: float, log) -> None:
    step = int(model.num_timesteps)
    actor = from_sb3(model, env_id(env_name))
    returns = rollout_return(actor, env_name, settings.eval_episodes, seed=10_000 + settings.seed)
    card = checkpoint_card(env_name, settings, step, returns, resumed, seconds)
    name = f"step-{step:07d}.pt"
    save_actor(actor, out / "checkpoints" / name, card)
    _append_curve(out, {"step": step, "return_mean": card["return_mean"], "return_std": card["return_std"],
                        "d4rl_score": card["d4rl_score"], "training_seconds": seconds, "file": f"checkpoints/{name}"})
    rate = f", {step / seconds:.0f} steps/s" if seconds > 0 else ""
    log(f"{env_name} step {step}: return {card['return_mean']:.1f} ± {card['return_std']:.1f}, "
        f"D4RL score {card['d4rl_score']:.1f}{rate}")
