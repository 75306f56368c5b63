"""Is a critic to be trusted? Q on the data's own actions beside the discounted returns its rewards allow and
beside the returns the data earned, read in the data's return convention.

Any q(states, actions) can be read: QGPO's Q_0 and every other algorithm's critic.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from policies.core.networks import TwinQ


@torch.inference_mode()
def q_values(q: TwinQ | Callable[[torch.Tensor, torch.Tensor], torch.Tensor], states: torch.Tensor, actions: torch.Tensor, chunk: int = 65_536) -> torch.Tensor:
    """min(Q1, Q2) for actions (N, A) or (N, M, A), in chunks of states."""
    per = max(1, chunk // (actions.shape[1] if actions.dim() == 3 else 1))
    return torch.cat([q(states[i : i + per], actions[i : i + per]) for i in range(0, states.shape[0], per)])


# ---------------------------------------------------------------- is Q_0 to be trusted?

def value_bounds(rewards: torch.Tensor, gamma: float) -> tuple[float, float]:
    """The discounted returns these rewards allow, [lo, hi]: Q of any policy lies inside, so a critic
    outside has diverged. Time-limit truncations are not terminals, hence the infinite-horizon sums."""
    r_min, r_max = float(rewards.min()), float(rewards.max())
    if gamma >= 1:
        return (r_min if r_min >= 0 else -float("inf")), (r_max if r_max <= 0 else float("inf"))
    return (r_min if r_min >= 0 else r_min / (1 - gamma)), (r_max if r_max <= 0 else r_max / (1 - gamma))


def probe_index(n: int, probe: int = 4096, seed: int = 0) -> torch.Tensor:
    """The dataset rows `critic_check` reads Q_0 on: a seeded draw, the same for every critic read at that seed."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:probe]


# the critic check reads Q_0 only on states whose Monte-Carlo return misses at most this discount weight: on data
# cut by time limits, a return-to-go near a cut is truncated there (it falls to 0 at the cut) while Q_0 bootstraps
# through it, so near a cut the two disagree by construction, however good the critic
TAIL_TOLERANCE = 0.01


def mc_probe(transitions: Any, gamma: float, probe: int = 4096, seed: int = 0,
             continuing: bool = False) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The rows a critic is read on, the data's discounted returns there, and the convention they follow.

    Returns run along the family's streams (`continuing`: maze data, one stream cut at each goal reached), and only
    rows whose return misses at most `TAIL_TOLERANCE` of discount weight are drawn (all rows if none does)."""
    mc = transitions.discounted_returns_to_go(gamma, continuing)
    eligible = (transitions.unseen_tail(gamma, continuing) <= TAIL_TOLERANCE).nonzero().squeeze(1)
    streams = "continuing streams" if continuing else "episodes"
    if eligible.numel() == 0:
        eligible, convention = torch.arange(len(mc)), f"{streams}; every row (each return stream is cut too soon)"
    else:
        convention = f"{streams}; rows at least {_horizon(gamma)} steps before a cut"
    idx = eligible[probe_index(eligible.numel(), probe, seed)]
    return idx, mc[idx], convention


def _horizon(gamma: float) -> int:
    return int(math.ceil(math.log(TAIL_TOLERANCE) / math.log(gamma))) if 0 < gamma < 1 else 0


@torch.inference_mode()
def critic_check(q: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], transitions: Any, gamma: float,
                 probe: int = 4096, seed: int = 0, continuing: bool = False,
                 drawn: tuple[torch.Tensor, torch.Tensor, str] | None = None) -> dict[str, Any]:
    """Q_0 (a TwinQ, or any q(states, actions)) on dataset actions beside what the rewards allow and what
    the data earned (`mc_probe`: the family's return convention, truncated tails left out).

    In-support softmax Q-learning backs up a soft maximum over sampled actions, so where Q's errors
    across actions grow with its scale it overestimates without bound (seen on hopper-medium-small
    with the official CEP critic as with ours). The mean outside `value_bounds` marks such a critic; the
    correlation with the data's Monte-Carlo returns says how well a critic inside ranks states. `drawn`: `mc_probe`'s
    result for these arguments, when the caller reads several critics (or one along its training) on it."""
    idx, mc, convention = drawn if drawn is not None else mc_probe(transitions, gamma, probe, seed, continuing)
    dev = transitions.actions.device
    q_data = q_values(q, transitions.observations[idx.to(dev)], transitions.actions[idx.to(dev)]).double().cpu()
    lo, hi = value_bounds(transitions.rewards, gamma)
    mean = float(q_data.mean())
    many = idx.numel() > 1 and q_data.std() > 0 and mc.std() > 0
    corr = float(torch.corrcoef(torch.stack([q_data, mc]))[0, 1]) if many else None
    return {"q_data_mean": mean, "q_data_std": float(q_data.std()) if q_data.numel() > 1 else 0.0,
            "value_bounds": [lo, hi], "outside_bounds": bool(not lo <= mean <= hi),
            "outside_fraction": float(((q_data < lo) | (q_data > hi)).double().mean()),
            "mc_return_mean": float(mc.mean()), "mc_correlation": corr, "probe_states": int(idx.numel()),
            "returns": convention}


class CriticProbe:
    """The rows critics are read on and the data's returns there, drawn once (the returns cost a pass over the
    data): every critic of a run, each point of one critic's course, and every FQE fit read the same rows."""

    POINT_KEYS = ("q_data_mean", "mc_correlation", "outside_bounds")

    def __init__(self, transitions: Any, gamma: float, seed: int = 0, continuing: bool = False, probe: int = 4096):
        self.transitions, self.gamma, self.seed = transitions, gamma, seed
        self.drawn = mc_probe(transitions, gamma, probe, seed, continuing)

    @property
    def rows(self) -> torch.Tensor:
        return self.drawn[0]

    def check(self, q: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> dict[str, Any]:
        """`critic_check` of `q` on the probe's rows."""
        return critic_check(q, self.transitions, self.gamma, seed=self.seed, drawn=self.drawn)

    def point(self, q: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], **where: Any) -> dict[str, Any]:
        """One point of a critic's course: `where` (stage, step) with the check's headline figures."""
        check = self.check(q)
        return {**where, **{k: check[k] for k in self.POINT_KEYS}}


def describe_check(check: dict[str, Any]) -> str:
    """One line for the run's log."""
    lo, hi = check["value_bounds"]
    line = (f"critic check: Q_0 on dataset actions {check['q_data_mean']:.1f} (the rewards allow [{lo:.4g}, {hi:.4g}]; "
            f"the data's discounted returns average {check['mc_return_mean']:.1f}"
            + (f" over {check['returns']}" if check.get("returns") else ""))
    if check["mc_correlation"] is not None:
        line += f", correlation {check['mc_correlation']:.2f}"
    line += ")"
    if check["outside_bounds"]:
        line += (" -- OUTSIDE what the rewards allow: the critic has diverged (overestimation through the in-support "
                 "soft maximum), so a policy guided or fine-tuned by it is not to be trusted")
    return line
