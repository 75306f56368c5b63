"""The one in-memory form every algorithm trains on: flat float32 tensors of transitions.

Built from whole episodes so that episode structure is explicit: a transition never crosses an
episode boundary, and a truncation (time limit, goal reached in a continuing task) is recorded as
a timeout, never as a terminal, so bootstrapping stays correct.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Iterable

import numpy as np
import torch

from envs.errors import DatasetError

REWARD_TRANSFORMS = ("none", "locomotion", "antmaze")


@dataclass(frozen=True)
class Episode:
    """One episode as arrays: T+1 observations (the last is the state after the final action)."""

    observations: np.ndarray  # (T+1, obs_dim)
    actions: np.ndarray  # (T, act_dim)
    rewards: np.ndarray  # (T,)
    terminations: np.ndarray  # (T,) bool
    truncations: np.ndarray  # (T,) bool
    # Explicit successors (T, obs_dim) when the source stores them (D4RL's next_observations);
    # otherwise the successor of step i is observations[i + 1].
    next_observations: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rewards)

    def successors(self) -> np.ndarray:
        return self.observations[1:] if self.next_observations is None else self.next_observations


@dataclass(frozen=True)
class Transitions:
    """Flat transitions plus episode offsets: episode e spans [episode_starts[e], episode_starts[e+1])."""

    observations: torch.Tensor  # (N, obs_dim) float32
    actions: torch.Tensor  # (N, act_dim) float32
    rewards: torch.Tensor  # (N,) float32
    next_observations: torch.Tensor  # (N, obs_dim) float32
    terminals: torch.Tensor  # (N,) float32, 1 where the env terminated
    timeouts: torch.Tensor  # (N,) float32, 1 where the episode was cut without terminating
    episode_starts: torch.Tensor  # (E+1,) int64 offsets

    def __len__(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_episodes(self) -> int:
        return self.episode_starts.shape[0] - 1

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def action_dim(self) -> int:
        return self.actions.shape[1]

    def episode_lengths(self) -> torch.Tensor:
        return self.episode_starts[1:] - self.episode_starts[:-1]

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return per episode, summed in float64 for long episodes."""
        ids = torch.repeat_interleave(torch.arange(self.num_episodes), self.episode_lengths())
        out = torch.zeros(self.num_episodes, dtype=torch.float64)
        return out.index_add_(0, ids, self.rewards.double())

    def return_streams(self, across_truncations: bool = False) -> torch.Tensor:
        """Offsets of the runs a return flows along: the episodes; or, for data recorded as one continuing
        stream cut at each goal reached (D4RL's maze2d, PointMaze), the episodes joined across their
        truncations, where the next episode is the same trajectory going on (a terminal still ends a run)."""
        if not across_truncations or self.num_episodes < 2:
            return self.episode_starts
        inner = self.episode_starts[1:-1]
        joined = self.timeouts[inner - 1] > 0
        return torch.cat([self.episode_starts[:1], inner[~joined], self.episode_starts[-1:]])

    def discounted_returns_to_go(self, gamma: float, across_truncations: bool = False) -> torch.Tensor:
        """(N,) float64: G_t = r_t + gamma G_{t+1} within each return stream (`return_streams`: the episodes, or
        with `across_truncations` the continuing stream they were cut from), restarting at every stream's start.

        A stream cut by a time limit has an unobserved tail, so its returns-to-go are truncated there
        (no bootstrap: a dataset label must not depend on a learned value); `unseen_tail` says how much."""
        if not 0 <= gamma <= 1:
            raise DatasetError(f"gamma must be in [0, 1], got {gamma}")
        rewards = self.rewards.double().cpu().tolist()  # plain floats: a Python loop over them is fast enough
        out = [0.0] * len(rewards)
        starts = self.return_streams(across_truncations).cpu().tolist()
        for begin, end in zip(starts[:-1], starts[1:]):
            g = 0.0
            for i in range(end - 1, begin - 1, -1):
                g = rewards[i] + gamma * g
                out[i] = g
        return torch.tensor(out, dtype=torch.float64)

    def unseen_tail(self, gamma: float, across_truncations: bool = False) -> torch.Tensor:
        """(N,) float64: gamma^(steps to the end of each transition's return stream) where that stream was cut
        without terminating (a time limit, or the data's end), else 0: the discount weight of what a Monte-Carlo
        return-to-go misses. Near 1 at the end of a truncated episode, whose truncated return says nothing of the
        state's value."""
        out = torch.zeros(len(self), dtype=torch.float64)
        starts = self.return_streams(across_truncations).cpu().tolist()
        terminals = self.terminals.cpu()
        for begin, end in zip(starts[:-1], starts[1:]):
            if terminals[end - 1] <= 0:
                out[begin:end] = torch.tensor(float(gamma), dtype=torch.float64) ** torch.arange(end - begin, 0, -1)
        return out

    def to(self, device: torch.device | str) -> "Transitions":
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)}
        return Transitions(**moved)

    @classmethod
    def from_episodes(cls, episodes: Iterable[Episode], source: str = "dataset") -> "Transitions":
        """Concatenate episodes after checking each one; `source` names the data in errors."""
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "rew", "next", "term", "trunc")}
        lengths = []
        for index, ep in enumerate(episodes):
            _check_episode(ep, f"{source}, episode {index}")
            if len(ep) == 0:
                continue
            parts["obs"].append(ep.observations[:-1])
            parts["next"].append(ep.successors())
            parts["act"].append(ep.actions)
            parts["rew"].append(ep.rewards)
            parts["term"].append(ep.terminations)
            parts["trunc"].append(ep.truncations)
            lengths.append(len(ep))
        if not lengths:
            raise DatasetError(f"{source}: no transitions (every episode is empty)")
        cat = {k: np.concatenate(v) for k, v in parts.items()}
        starts = np.concatenate([[0], np.cumsum(lengths)])
        return cls.from_arrays(
            observations=cat["obs"],
            actions=cat["act"],
            rewards=cat["rew"],
            next_observations=cat["next"],
            terminals=cat["term"],
            timeouts=cat["trunc"],
            episode_starts=starts,
        )

    @classmethod
    def from_arrays(cls, **arrays: np.ndarray) -> "Transitions":
        def f32(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

        obs, act = arrays["observations"], arrays["actions"]
        return cls(
            observations=f32(obs.reshape(len(obs), -1)),
            actions=f32(act.reshape(len(act), -1)),
            rewards=f32(arrays["rewards"].reshape(-1)),
            next_observations=f32(arrays["next_observations"].reshape(len(obs), -1)),
            terminals=f32(arrays["terminals"].reshape(-1)),
            timeouts=f32(arrays["timeouts"].reshape(-1)),
            episode_starts=torch.as_tensor(np.asarray(arrays["episode_starts"], dtype=np.int64)),
        )


def _check_episode(ep: Episode, where: str) -> None:
    t = len(ep.rewards)
    expected = {
        "observations": t + 1,
        "actions": t,
        "terminations": t,
        "truncations": t,
    }
    if ep.next_observations is not None:
        expected["next_observations"] = t
    for name, n in expected.items():
        got = len(getattr(ep, name))
        if got != n:
            raise DatasetError(
                f"{where}: {name} has {got} entries but {n} are needed for {t} rewards "
                f"(observations carry one more entry than actions: the final state)"
            )
    for name in ("terminations", "truncations"):
        raw = np.asarray(getattr(ep, name))
        not_flags = ~np.isin(raw, (0, 1)) if raw.dtype != bool else None
        if not_flags is not None and not_flags.any():
            value = raw[not_flags].flat[0].item()
            raise DatasetError(
                f"{where}: {name} holds {value!r}, not a flag: each entry must be 0 or 1 (true or false); "
                f"the file's episode boundaries are corrupt or were written with another meaning"
            )
        flags = raw.astype(bool)
        if t > 1 and flags[:-1].any():
            step = int(np.flatnonzero(flags[:-1])[0])
            raise DatasetError(
                f"{where}: {name} is set at step {step} of {t}, before the episode's end; an episode "
                f"can only end at its last step (the file's episode boundaries are corrupt)"
            )
    explicit = {} if ep.next_observations is None else {"next_observations": ep.next_observations}
    check_finite(where, observations=ep.observations, actions=ep.actions, rewards=ep.rewards, **explicit)


def check_finite(where: str, **arrays: np.ndarray) -> None:
    """Raise naming the first array and row holding NaN or inf."""
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if not np.issubdtype(arr.dtype, np.floating):
            continue
        bad = ~np.isfinite(arr)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise DatasetError(
                f"{where}: {name} holds {int(bad.sum())} NaN/inf value(s), first at row {row}; "
                f"repair or drop those rows before loading"
            )


def check_action_bounds(
    actions: np.ndarray | torch.Tensor,
    low: np.ndarray,
    high: np.ndarray,
    tolerance: float,
    where: str,
) -> None:
    """Actions past the action space by more than `tolerance` mean the data and env disagree."""
    a = actions.numpy() if isinstance(actions, torch.Tensor) else np.asarray(actions)
    excess = np.maximum(a - high, low - a).max(axis=-1)
    worst = int(np.argmax(excess))
    if excess[worst] > tolerance:
        raise DatasetError(
            f"{where}: {int((excess > tolerance).sum())} action(s) lie outside the action space "
            f"[{np.round(low, 4).tolist()}, {np.round(high, 4).tolist()}] by more than {tolerance:g}; "
            f"worst is row {worst} = {np.round(a[worst], 4).tolist()}. The data does not match its "
            f"environment; raise action_tolerance (--action-tolerance) only if that is intended"
        )


def transform_rewards(transitions: Transitions, kind: str) -> Transitions:
    """Reward shaping used by the field's offline-RL baselines.

    locomotion: r * 1000 / (max return - min return) over the dataset's episodes (IQL, QGPO).
    antmaze: r - 1 (IQL), so that reaching the goal ends a stream of -1 rewards.
    """
    if kind == "none":
        return transitions
    if kind == "locomotion":
        returns = transitions.episode_returns()
        span = float(returns.max() - returns.min())
        if span <= 0:
            raise DatasetError(
                "reward transform 'locomotion' needs episodes with different returns; "
                "all episodes return the same amount"
            )
        return replace(transitions, rewards=transitions.rewards * (1000.0 / span))
    if kind == "antmaze":
        return replace(transitions, rewards=transitions.rewards - 1.0)
    raise DatasetError(f"unknown reward transform {kind!r}; choose one of {', '.join(REWARD_TRANSFORMS)}")


def episodes_from_flat(
    observations: np.ndarray,
    actions: np.ndarray,
    rewards: np.ndarray,
    terminals: np.ndarray,
    timeouts: np.ndarray,
    next_observations: np.ndarray | None,
) -> tuple[list[Episode], int]:
    """Split D4RL-style flat arrays into episodes at every terminal or timeout.

    Without `next_observations` the successor of an episode's last step is unknown: a step ending
    by timeout (or the unfinished tail of the file) is dropped, as D4RL's `qlearning_dataset`
    does, and the step before it becomes the episode's truncated end. A terminal step keeps its
    own observation as a placeholder successor, which the (1 - terminal) mask keeps out of every
    Bellman target. Returns the episodes and the number of dropped steps.
    """
    n = len(rewards)
    ends = np.flatnonzero(np.logical_or(terminals, timeouts)) + 1
    if len(ends) == 0 or ends[-1] != n:
        ends = np.append(ends, n)
    episodes: list[Episode] = []
    dropped = 0
    start = 0
    for end in ends:
        last = end - 1
        if next_observations is not None:
            final_obs = next_observations[last]
        elif terminals[last]:
            final_obs = observations[last]
        else:
            final_obs = observations[last]  # the dropped step's state ends the shortened episode
            end, dropped = last, dropped + 1
        if end > start:
            k = slice(start, end)
            truncations = timeouts[k].astype(bool)
            truncations[-1] |= end == last  # shortened: cut, not terminated
            episodes.append(
                Episode(
                    observations=np.concatenate([observations[k], final_obs[None]]),
                    actions=actions[k],
                    rewards=rewards[k],
                    terminations=terminals[k].astype(bool),
                    truncations=truncations,
                    next_observations=None if next_observations is None else next_observations[k],
                )
            )
        start = last + 1
    return episodes, dropped
