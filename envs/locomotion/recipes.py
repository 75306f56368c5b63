"""D4RL's locomotion recipes, rolled out from committed SAC actors (`envs/data/policies/<env>/`).

As D4RL made them: the policy's stochastic actions, 1000-step episodes (the env's time limit: a
truncation), terminals from the env (Hopper and Walker2d fall; HalfCheetah never terminates).
- random: the randomly initialised actor (SAC at step 0).
- medium: the checkpoint whose return is closest to a third of D4RL's expert reference.
- expert: the best checkpoint the training reached (named by its score on its card: on two CPU cores it
  may fall short of D4RL's expert; when it is the medium checkpoint itself there is no expert data, and
  expert and medium-expert refuse to generate).
- medium-expert: medium's and expert's data, `steps` of each (D4RL: 1M + 1M).
- medium-replay: an approximation of SAC's replay buffer up to the medium checkpoint: each saved
  checkpoint's actor for the steps of training it stood for (uniform random actions for the first
  `learning_starts`, as SAC's warm-up), each segment starting a new episode; `steps` caps it, shrinking
  every segment alike (D4RL kept the buffer itself, of its own size).
Deterministic per seed: the same seed gives the same episodes (and checksum).
The actors act in numpy float64 (`actor_math` "float64"), whose bytes are the same on any x86-64-v3 CPU under
the generation pin; the three -medium-small recipes keep torch float32 ("torch"), as their committed results
were made, so their bytes differ between Intel and AMD CPUs (README, "The same bytes on another machine").
"""

from __future__ import annotations

import importlib.metadata as md
import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from minari.data_collector import EpisodeBuffer
from tqdm import tqdm

from envs.errors import DatasetError
from envs.mujoco_warnings import quiet_mujoco_warnings
from envs.locomotion.actor import SquashedGaussianActor, check_spaces, load_actor
from envs.locomotion.sac import ENVS, d4rl_references, env_id
from envs.scores import normalized_score

LEVELS = ("random", "medium", "medium-replay", "medium-expert", "expert")
HELDOUT_SEED = 20_000  # pick's fresh readings; training reads its checkpoints at env seeds 10_000 + seed + i
FULL, SMALL = 1_000_000, 100_000


@dataclass(frozen=True)
class LocomotionRecipe:
    env: str
    level: str
    steps: int  # per policy; medium-expert holds twice this
    actor_math: str = "float64"  # "torch": the actor's float32 torch forward pass, CPU-vendor dependent

    @property
    def env_id(self) -> str:
        return env_id(self.env)


# The leaderboard's runs on the -medium-small datasets were trained on torch-rolled bytes made on AMD CPUs;
# those recipes stay as they were so the runs keep their data. Every other recipe rolls out portably.
TORCH_MADE = ("medium-small",)

RECIPES: dict[str, LocomotionRecipe] = {
    f"diffbench/{env}/{level}{suffix}-v0": LocomotionRecipe(
        env, level, steps, "torch" if f"{level}{suffix}" in TORCH_MADE else "float64")
    for env in ENVS for level in LEVELS for suffix, steps in (("", FULL), ("-small", SMALL))
}


def policies_dir(env: str) -> Path:
    return Path(str(resources.files("envs").joinpath("data", "policies", env)))


def policy_index(env: str, root: Path | None = None) -> dict[str, Any]:
    """`index.json` of an env's committed actors: file names per role and the replay schedule."""
    path = (root or policies_dir(env)) / "index.json"
    if not path.is_file():
        raise DatasetError(f"no committed behaviour policies for {env} ({path} is missing); train them with "
                           f"`diffbench policies train {env}` and `diffbench policies pick {env}`")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise DatasetError(f"{path} is not valid JSON ({exc}); restore it from git") from None


def _actor(env: str, file: str, root: Path | None, check: gym.Env) -> tuple[SquashedGaussianActor, dict[str, Any]]:
    actor, card = load_actor((root or policies_dir(env)) / file)
    check_spaces(actor.spec, check, f"policy {file} of {env}")
    return actor, card


def collect(env: gym.Env, steps: int, rng: np.random.Generator, seed: int | None,
            act, first_id: int = 0, desc: str = "", progress: bool = False) -> list[EpisodeBuffer]:
    """`steps` transitions of `act(obs, rng)` in `env`; the last episode is cut by the budget (a truncation)."""
    episodes: list[EpisodeBuffer] = []
    obs, _ = env.reset(seed=seed)
    ep = _new(obs)
    for t in tqdm(range(steps), desc=desc, disable=not progress, unit="step", mininterval=1.0):
        action = np.asarray(act(obs, rng), dtype=np.float32)
        obs, reward, terminated, truncated, _ = env.step(action)
        last = t == steps - 1
        ep["actions"].append(action)
        ep["rewards"].append(float(reward))
        ep["terminations"].append(bool(terminated))
        ep["truncations"].append(bool(truncated or (last and not terminated)))
        ep["obs"].append(np.asarray(obs, dtype=np.float64))
        if terminated or truncated or last:
            episodes.append(_buffer(first_id + len(episodes), ep, seed if not episodes else None))
            if not last:
                obs, _ = env.reset()
                ep = _new(obs)
    return episodes


def _new(obs: np.ndarray) -> dict[str, list]:
    return {"obs": [np.asarray(obs, dtype=np.float64)], "actions": [], "rewards": [], "terminations": [],
            "truncations": []}


def _buffer(index: int, ep: dict[str, list], seed: int | None) -> EpisodeBuffer:
    return EpisodeBuffer(id=index, seed=seed, observations=np.stack(ep["obs"]), actions=np.stack(ep["actions"]),
                         rewards=np.asarray(ep["rewards"]), terminations=np.asarray(ep["terminations"], dtype=bool),
                         truncations=np.asarray(ep["truncations"], dtype=bool))


def _replay_segments(index: dict[str, Any], steps: int) -> list[tuple[str | None, int]]:
    """(actor file or None for uniform actions, steps) per segment of the replay up to medium, scaled to `steps`."""
    schedule = index["replay"]  # [{"file": ..., "from": step, "to": step}], in training order
    total = schedule[-1]["to"]
    scale = min(1.0, steps / total)
    warm = min(int(index.get("learning_starts", 0)), total)
    segments: list[tuple[str | None, int]] = []
    for seg in schedule:
        lo, hi = seg["from"], seg["to"]
        if lo < warm:  # SAC's warm-up: uniform random actions
            segments.append((None, min(hi, warm) - lo))
            lo = min(hi, warm)
        if hi > lo:
            segments.append((seg["file"], hi - lo))
    return [(f, max(1, round(n * scale))) for f, n in segments]


def build(dataset_id: str, steps: int | None, seed: int, progress: bool, root: Path | None = None) -> dict[str, Any]:
    """Roll a recipe out; returns the arguments `minari_writer.write_dataset` takes. `root`: another
    directory of actors than the committed one (tests)."""
    if dataset_id not in RECIPES:
        raise DatasetError(f"no recipe generates {dataset_id!r}; generatable ids: {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[dataset_id]
    steps = recipe.steps if steps is None else steps
    if steps < 1:
        raise DatasetError(f"steps must be positive, got {steps}")
    index = policy_index(recipe.env, root)
    if recipe.level in ("expert", "medium-expert") and index["expert"] == index["medium"]:
        score = index.get("cards", {}).get(index["medium"], {}).get("d4rl_score", float("nan"))
        raise DatasetError(f"{dataset_id}: {recipe.env}'s committed policies reach no expert (their best checkpoint is "
                           f"the medium one, {index['medium']}, D4RL score {score:.1f}), so there is no expert data to "
                           f"roll out; train further (`diffbench policies train {recipe.env} --steps N` resumes a run) "
                           f"and pick again (`diffbench policies pick {recipe.env} --run DIR`)")
    quiet_mujoco_warnings()
    env = gym.make(recipe.env_id)
    rng = np.random.default_rng(seed)
    buffers: list[EpisodeBuffer] = []
    used: dict[str, dict[str, Any]] = {}

    def roll(file: str | None, n: int, role: str) -> None:
        if file is None:
            space = env.action_space
            act = lambda obs, r: r.uniform(space.low, space.high)  # noqa: E731
        else:
            actor, card = _actor(recipe.env, file, root, env)
            used[file] = card
            act = actor.act if recipe.actor_math == "torch" else actor.portable().act
        buffers.extend(collect(env, n, rng, seed if not buffers else None, act, len(buffers),
                               f"{dataset_id} {role}", progress))

    if recipe.level == "medium-replay":
        for file, n in _replay_segments(index, steps):
            roll(file, n, "replay")
    else:
        for role in (("medium", "expert") if recipe.level == "medium-expert" else (recipe.level,)):
            roll(index[role], steps, role)
    env.close()
    ref_min, ref_max = d4rl_references(recipe.env)
    total = sum(len(b.rewards) for b in buffers)
    returns = np.array([float(np.sum(b.rewards)) for b in buffers])
    card = {
        "dataset_id": dataset_id, "generator": "envs.locomotion.recipes (diffbench)", "recipe": asdict(recipe),
        "env_id": recipe.env_id, "steps": total, "custom_size": steps != recipe.steps, "seed": seed,
        "episodes": len(buffers), "reward_transform": "locomotion",
        "policies": {f: {**{k: c.get(k) for k in ("training_steps", "return_mean", "d4rl_score", "seed")},
                         "heldout": index.get("cards", {}).get(f, {}).get("heldout")} for f, c in used.items()},
        "ref_min_score": ref_min, "ref_max_score": ref_max,
        "data_score": float(np.mean(100.0 * (returns - ref_min) / (ref_max - ref_min))),
        "data_score_how": f"the mean normalised return of the data's {len(buffers)} episodes",
        "references": "D4RL's random and expert returns, measured on the v2 envs; the data come from the v5 envs",
        "approximation": ("SAC's replay buffer up to medium, remade from the checkpoints saved along training"
                          if recipe.level == "medium-replay" else None),
        "versions": {p: md.version(p) for p in ("diffbench", "minari", "gymnasium", "mujoco", "numpy", "torch")},
    }
    description = (f"D4RL-style {recipe.env} {recipe.level}: {total} steps of SAC behaviour policies' stochastic "
                   f"actions on {recipe.env_id} (1000-step episodes, terminals from the env), seed {seed}.")
    return dict(buffers=buffers, card=card, env=gym.make(recipe.env_id), eval_env=gym.make(recipe.env_id),
                algorithm_name="SAC (stable-baselines3) behaviour policies", author="diffbench",
                author_email="diffbench@localhost", code_permalink="diffbench envs/locomotion/recipes.py",
                ref_min_score=ref_min, ref_max_score=ref_max, num_episodes_average_score=100,
                description=description)


def pick_policies(env: str, run: Path, dest: Path | None = None, replay_every: int = 20_000,
                  medium_fraction: float = 1 / 3, medium_step: int | None = None,
                  keep_medium: bool = False, heldout_episodes: int = 50) -> dict[str, Any]:
    """Copy the checkpoints the recipes need from a SAC run (`sac.train`'s `out`) into `dest` (the committed
    policies directory by default) with an `index.json`: random (step 0), medium, expert (the best return), and
    every `replay_every` steps up to medium for the replay. Checkpoint files in `dest` that the new index does
    not name are removed.

    Medium is the checkpoint at `medium_step` when given; else the medium `dest` already holds, when it is this
    run's checkpoint (training on past medium to reach an expert must not change the medium that the committed
    datasets and results were made from, as D4RL's medium stayed fixed); else the return closest to
    `medium_fraction` of D4RL's expert return. When the run's files at the held medium's or replay's steps were
    rewritten (training resumed from a state saved before them), `keep_medium` keeps `dest`'s files as they are
    and takes only the expert from the run: the expert's training then branched from the medium's, which the
    card says.

    The expert is the best of many noisy readings along training, so its reading there is biased upward;
    medium and expert are read again on `heldout_episodes` fresh episodes (other env seeds), the figure
    their card names them by (0 skips it)."""
    from envs.locomotion.sac import read_curve, rollout_return

    run, dest = Path(run), Path(dest) if dest is not None else policies_dir(env)
    curve = read_curve(run)
    if len(curve) < 2:
        raise DatasetError(f"{run} holds no SAC training curve past step 0; train first: diffbench policies train {env}")
    settings = json.loads((run / "settings.json").read_text())
    if settings.get("env") != env:
        raise DatasetError(f"{run} is a SAC run on {settings.get('env')}, not {env}")
    if replay_every % int(settings["checkpoint_every"]):
        raise DatasetError(f"replay_every ({replay_every}) must be a multiple of the run's checkpoint_every "
                           f"({int(settings['checkpoint_every'])})")
    ref_min, expert_ref = d4rl_references(env)
    dest.mkdir(parents=True, exist_ok=True)
    held = None if medium_step is not None else _held_medium(dest, run, env, int(settings["seed"]), curve)
    kept: dict[str, dict[str, Any]] = {}  # files kept from `dest` as they are, with rows from its index
    if medium_step is not None:
        choice = "chosen"
    elif held is None:
        choice = "closest"
    elif held["changed"] and not keep_medium:
        raise DatasetError(f"{run}'s {', '.join(held['changed'])} differ from the files in {dest} (training resumed from "
                           f"a state saved before them rewrites them), so this run no longer holds the medium and "
                           f"replay the datasets were made from; pass --keep-medium to keep {dest}'s files and take "
                           f"only the expert from this run, or --medium-step STEP to pick anew (the medium and "
                           f"medium-replay data will change)")
    else:
        choice, medium_step = ("branched" if held["changed"] else "kept"), held["step"]
        if held["changed"]:
            missing = [n for n in held["names"] if not (dest / n).is_file()]
            if missing:
                raise DatasetError(f"{dest} lacks {', '.join(missing)}, which its index.json names; restore them "
                                   f"(git checkout -- {dest}) or pass --medium-step STEP to pick anew")
            kept = {n: {"step": c["training_steps"], "file": n, **{k: c[k] for k in ("return_mean", "return_std",
                                                                                       "d4rl_score")}}
                    for n, c in held["index"]["cards"].items() if n in held["names"]}
    rows = sorted([*(r for r in curve if Path(r["file"]).name not in kept), *kept.values()], key=lambda r: r["step"])
    trained = [r for r in rows if r["step"] > 0]
    medium = next((r for r in trained if int(r["step"]) == medium_step), None) if medium_step is not None else \
        min(trained, key=lambda r: abs(r["return_mean"] - medium_fraction * expert_ref))
    if medium is None:
        raise DatasetError(f"{run} has no trained checkpoint at step {medium_step}; its checkpoints are at steps "
                           f"{', '.join(str(int(r['step'])) for r in trained)}")
    expert = max((r for r in trained if Path(r["file"]).name not in kept or r is medium),
                 key=lambda r: r["return_mean"])
    replay = [r for r in rows if r["step"] < medium["step"] and int(r["step"]) % replay_every == 0]
    roles = {"random": rows[0], "medium": medium, "expert": expert}
    files = {}
    for row in [*roles.values(), *replay]:
        name = Path(row["file"]).name
        files[name] = row
        if name not in kept:
            (dest / name).write_bytes((run / row["file"]).read_bytes())
    for stale in dest.glob("step-*.pt"):
        if stale.name not in files:
            stale.unlink()
    bounds = [int(r["step"]) for r in replay] + [int(medium["step"])]
    index = {"env": env, "seed": int(settings["seed"]), "learning_starts": int(settings["learning_starts"]),
             **{role: Path(row["file"]).name for role, row in roles.items()},
             "replay": [{"file": Path(r["file"]).name, "from": lo, "to": hi}
                        for r, lo, hi in zip(replay, bounds[:-1], bounds[1:])],
             "cards": {name: {"training_steps": int(r["step"]), "return_mean": r["return_mean"],
                              "return_std": r["return_std"], "d4rl_score": r["d4rl_score"]}
                       for name, r in sorted(files.items())},
             "medium_target_return": medium_fraction * expert_ref, "medium_choice": choice,
             "trained_steps": int(curve[-1]["step"])}
    if kept:
        index["shared_until"] = held["shared_until"]
    if heldout_episodes > 0:
        for name in {index["medium"], index["expert"]}:
            returns = rollout_return(load_actor(dest / name)[0], env, heldout_episodes, seed=HELDOUT_SEED + index["seed"])
            index["cards"][name]["heldout"] = {
                "episodes": heldout_episodes, "env_seeds": f"{HELDOUT_SEED + index['seed']}+i",
                "return_mean": float(returns.mean()), "return_std": float(returns.std()),
                "d4rl_score": float(normalized_score(returns.mean(), ref_min, expert_ref))}
    (dest / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    (dest / "CARD.md").write_text(_card_markdown(index, load_actor(run / expert["file"])[1]))
    return index


def _held_medium(dest: Path, run: Path, env: str, seed: int, curve: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The medium `dest` holds from this run (same env and seed), if any: its step, the held medium's and replay's
    files, those of them that differ from the run's (training resumed from a state saved before them rewrites
    them), and the last step up to which the run's files and the held ones agree."""
    try:
        held = json.loads((dest / "index.json").read_text())
        names = [held["medium"], *(r["file"] for r in held.get("replay", []))]
    except (OSError, KeyError, TypeError, ValueError):
        return None
    in_run = {Path(r["file"]).name: r for r in curve}
    if held.get("env") != env or held.get("seed") != seed or held["medium"] not in in_run:
        return None
    changed = [n for n in names if n in in_run and (not (dest / n).is_file()
                                                    or (dest / n).read_bytes() != (run / in_run[n]["file"]).read_bytes())]
    first_changed = min((int(in_run[n]["step"]) for n in changed), default=None)
    same = [int(in_run[n]["step"]) for n in names if n in in_run and n not in changed
            and (first_changed is None or int(in_run[n]["step"]) < first_changed)]
    return {"step": int(in_run[held["medium"]]["step"]), "names": names, "changed": changed, "index": held,
            "shared_until": max(same, default=0)}


_MEDIUM_CHOICE = {
    "closest": "the checkpoint closest to {target:.0f} (a third of the expert reference)",
    "kept": "step {step:,}, kept from the earlier pick when training went on (the datasets are made from it; the "
            "target was {target:.0f}, a third of the expert reference)",
    "chosen": "step {step:,}, chosen by hand (the target was {target:.0f}, a third of the expert reference)",
    "branched": "step {step:,}, kept with the replay's checkpoints from the earlier pick (the datasets are made from "
                "them; the target was {target:.0f}, a third of the expert reference). The expert comes from training "
                "resumed from a learner state saved before the medium: the two runs' checkpoints agree up to step "
                "{shared:,}, then branch, so the expert did not train through this medium",
}


def _card_markdown(index: dict[str, Any], card: dict[str, Any]) -> str:
    """The policies' card: how they were trained and what each one scores."""
    roles: dict[str, list[str]] = {}
    for role in ("random", "medium", "expert"):
        roles.setdefault(index[role], []).append(role)
    expert = index["cards"][index["expert"]]
    fresh = expert.get("heldout")
    named = fresh["d4rl_score"] if fresh else expert["d4rl_score"]
    lines = [f"# Behaviour policies for {index['env']} ({card['env_id']})", "",
             f"{card['algorithm']}, seed {index['seed']}; " + ", ".join(f"{k} {v}" for k, v in card["versions"].items())
             + f". Returns: mean ± std over {card['eval_episodes']} episodes of the policy's stochastic actions (as the "
             f"datasets record them), read along training. D4RL score: 100 (R − random) / (expert − random) with "
             f"D4RL's references (random {card['d4rl_references']['random']:g}, expert "
             f"{card['d4rl_references']['expert']:g}), measured by D4RL on the v2 envs; these returns are on v5. Medium: "
             + _MEDIUM_CHOICE[index.get("medium_choice", "closest")].format(
                 target=index["medium_target_return"], step=index["cards"][index["medium"]]["training_steps"],
                 shared=index.get("shared_until", 0))
             + f". Expert: the best checkpoint of {index.get('trained_steps', 0):,} training steps by those readings, "
             f"D4RL score {expert['d4rl_score']:.1f} there"
             + (f" (the best of many noisy readings reads high); on {fresh['episodes']} fresh episodes (env seeds "
                f"{fresh['env_seeds']}) it scores {named:.1f}, the score it is named by" if fresh else "")
             + (" (short of D4RL's expert, 100)." if named < 90 else "."), "",
             "| file | role | training steps | return | D4RL score | fresh episodes: return | D4RL score |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, c in index["cards"].items():
        h = c.get("heldout")
        again = f"{h['return_mean']:.1f} ± {h['return_std']:.1f} | {h['d4rl_score']:.1f}" if h else "| "
        lines.append(f"| {name} | {', '.join(roles.get(name, ['replay']))} | {c['training_steps']:,} | {c['return_mean']:.1f} ± "
                     f"{c['return_std']:.1f} | {c['d4rl_score']:.1f} | {again} |")
    return "\n".join(lines) + "\n"
