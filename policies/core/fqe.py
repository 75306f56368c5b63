"""Fitted-Q evaluation of the behaviour policy, with an algorithm's own critic: can that critic, as the algorithm
builds and trains it (network, state normalisation, rates, batch, target rate, discount, the run's rewards),
learn what the data's own policy is worth?

SARSA on the data:  Q(s, a) <- r + gamma (1 - d) Q'(s', a'),  a' the action the data took next,
on every transition whose next action is in the data (the next row continues the trajectory) or that
terminated; a trajectory cut by a time limit has no next action, so its last transition is left out. A critic
that cannot learn this (its Q beside the data's Monte-Carlo returns: `policies.core.critics.critic_check`) cannot
be trusted to rank the actions a policy improves with.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch

from policies.core.networks import TwinQ
from policies.core.normalization import StateNorm
from policies.core.training import TrainHooks, optimiser_step, polyak_update, run_steps


@dataclass
class CriticSpec:
    """How an algorithm builds and trains its critic (`Algorithm.critic_spec`)."""

    q: TwinQ  # the algorithm's critic network, as built (copied, never trained in place)
    normalize_states: bool
    lr: float
    batch: int
    tau: float
    gamma: float


def successor_actions(t: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(index of each transition's next action, rows that can be backed up): the next row where it continues the
    trajectory, a terminal row's own index (its bootstrap is masked out)."""
    n = t.actions.shape[0]
    continues = torch.zeros(n, dtype=torch.bool, device=t.actions.device)
    continues[:-1] = (t.next_observations[:-1] == t.observations[1:]).all(-1)
    terminal = t.terminals > 0
    nxt = torch.arange(n, device=t.actions.device)
    nxt[:-1] = torch.where(continues[:-1], nxt[1:], nxt[:-1])
    return nxt, (continues | terminal).nonzero().squeeze(1)


def fit_fqe(spec: CriticSpec, t: Any, steps: int, generator: torch.Generator, checks: int = 0,
            on_check: Callable[[int, Callable], None] | None = None
            ) -> tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], dict]:
    """Train a copy of the spec's critic by SARSA on `t`; returns q(states, actions) on raw states (the target
    network's pessimistic twin) and the stage's record. `on_check(step, q)` is called at `checks` evenly spaced
    steps inside the run, to follow the critic as it learns."""
    q = copy.deepcopy(spec.q)  # as the algorithm built it, before any training
    q_target = copy.deepcopy(q).requires_grad_(False)
    norm = StateNorm(t.obs_dim).to(t.actions.device)
    if spec.normalize_states:
        norm.fit(t.observations)
    s_all, s2_all = norm(t.observations), norm(t.next_observations)
    nxt, rows = successor_actions(t)
    opt = torch.optim.Adam(q.parameters(), lr=spec.lr)
    terminals = t.terminals.float()

    def step(_: int) -> torch.Tensor:
        i = rows[torch.randint(rows.numel(), (spec.batch,), device=rows.device, generator=generator)]
        with torch.no_grad():
            y = t.rewards[i] + spec.gamma * (1 - terminals[i]) * q_target(s2_all[i], t.actions[nxt[i]])
        loss = optimiser_step(opt, q.regression_loss(s_all[i], t.actions[i], y))
        polyak_update(q_target, q, spec.tau)
        return loss

    def read(states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return q_target(norm(states), actions)

    hooks = TrainHooks(curve_points=checks, on_eval=(lambda _, done: on_check(done, read)) if on_check else None)
    record = run_steps(step, steps, "fqe", hooks=hooks, state={"q": q, "q_target": q_target, "optimizer": opt,
                                                                 "generator": generator})
    return read, record
