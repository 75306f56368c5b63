"""The official CEP critic beside ours on the same inputs (`diffbench perf critic --official DIR`).

When Q_0 leaves the discounted returns its rewards allow (`policies.algorithms.pretrain.critic_check`),
is that our port or the algorithm? Both critics here train in one process, on one dataset, from one
set of support actions (a run's support stage) and the same batches: the official `update_q0` with its
own networks (3x256, as its code fixes them) and ours (`td_loss`, Polyak target, at that width). Every
`every` steps, each target network's Q_0 on a fixed probe of dataset actions is read beside the allowed
range and the data's discounted returns.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from bench.harness.provenance import code_version, made_by
from bench.studies.official import code_root, describe, official_critic
from envs.catalog import load_dataset
from policies.algorithms.pretrain import td_loss
from policies.core.critics import CriticProbe
from policies.algorithms.staged import SHARED
from policies.core.checkpoint import load_checkpoint
from policies.core.networks import TwinQ
from policies.core.training import polyak_update
from policies.errors import ConfigError

OFFICIAL_WIDTH = 256  # the official TwinQ's hidden width (3 layers)
PROBE = 4_096  # dataset states Q_0 is read on


def read_support(path: Path) -> dict[str, Any]:
    """A support stage checkpoint, which names the dataset and reward transform it was made on."""
    return load_checkpoint(Path(path), algorithm=(SHARED, "qgpo"), stage="support")


def compare(official: Path, support: Path, steps: int = 30_000, every: int = 2_500, seed: int = 0, gamma: float = 0.99,
            beta_q: float = 1.0, batch: int = 256, probe: int = PROBE,
            on_row: Callable[[dict[str, Any]], None] | None = None) -> pd.DataFrame:
    """One row per (critic, step): Q_0 on the probe's dataset actions, its spread over the support actions,
    the allowed range, and the correlation with the data's discounted returns. `on_row` sees each row as it is
    read (a long comparison runs for most of an hour)."""
    code_root(official)  # a wrong path fails before any work
    if gamma != 0.99:
        raise ConfigError("the official critic's discount is fixed at 0.99")
    torch.set_num_threads(1)  # the two critics alternate on one core: neither is favoured
    s = read_support(support)
    made_on = s["dataset"]
    t = load_dataset(made_on["id"], reward_transform=made_on["reward_transform"]).transitions
    n = t.actions.shape[0]
    if s["next_index"].shape[0] != n or (t.obs_dim, t.action_dim) != (s["dims"]["observation_dim"], s["dims"]["action_dim"]):
        raise ConfigError(f"{support} was made on {made_on['id']} with {s['next_index'].shape[0]} transitions; that "
                          f"dataset now has {n}: regenerate the support stage")
    states, sup, nxt = torch.cat([t.observations, s["extra_states"]]), s["support"], s["next_index"]
    terminals = t.terminals.float()
    reader = CriticProbe(t, gamma, seed=seed, probe=probe)
    idx = reader.rows  # the states the check reads, for the spread over support actions
    torch.manual_seed(seed)
    ours = TwinQ(t.action_dim, t.obs_dim, OFFICIAL_WIDTH, 3)
    target, opt = copy.deepcopy(ours).requires_grad_(False), torch.optim.Adam(ours.parameters(), lr=3e-4)
    rows, seconds = [], {"official": 0.0, "diffbench": 0.0}
    with official_critic(official, torch.device("cpu"), t.obs_dim, t.action_dim, beta_q) as (update_q0, official_q):
        def step_ours(i: torch.Tensor, j: torch.Tensor) -> None:
            loss = td_loss(ours, target, states[i], t.actions[i], t.rewards[i], terminals[i], states[j], sup[j], gamma, beta_q)
            opt.zero_grad()
            loss.backward()
            opt.step()
            polyak_update(target, ours, 0.005)

        def step_official(i: torch.Tensor, j: torch.Tensor) -> None:
            update_q0({"s": states[i], "a": t.actions[i], "r": t.rewards[i][:, None], "s_": states[j],
                       "d": terminals[i][:, None], "fake_a": sup[i], "fake_a_": sup[j]})

        critics = {"official": (step_official, official_q), "diffbench": (step_ours, target)}
        g = torch.Generator().manual_seed(seed)
        for k in range(1, steps + 1):
            i = torch.randint(n, (batch,), generator=g)
            for name, (step, _) in critics.items():
                began = time.perf_counter()
                step(i, nxt[i])
                seconds[name] += time.perf_counter() - began
            if k % every == 0 or k == steps:
                with torch.no_grad():
                    for name, (_, q) in critics.items():
                        check = reader.check(q)
                        q_sup = q(t.observations[idx], sup[idx]).double().numpy()
                        rows.append({"critic": name, "step": k, "q_data_mean": check["q_data_mean"],
                                     "spread_median": float(np.median(q_sup.max(1) - q_sup.min(1))),
                                     "low": check["value_bounds"][0], "high": check["value_bounds"][1],
                                     "outside": check["outside_bounds"], "mc_return_mean": check["mc_return_mean"],
                                     "mc_correlation": check["mc_correlation"], "seconds": seconds[name]})
                        if on_row is not None:
                            on_row(rows[-1])
    df = pd.DataFrame(rows)
    df.attrs["dataset"] = made_on
    return df


def write(df: pd.DataFrame, out: Path, command: str, official: Path, support: Path, seconds: float) -> None:
    """`df`: `compare`'s, which names the support stage's dataset in its attrs."""
    made_on = df.attrs["dataset"]
    dataset = f"{made_on['id']} (rewards: {made_on['reward_transform']})"
    wide = df.pivot(index="step", columns="critic", values="q_data_mean")
    spread = df.pivot(index="step", columns="critic", values="spread_median")
    corr = df.pivot(index="step", columns="critic", values="mc_correlation")
    lo, hi = df["low"].iloc[0], df["high"].iloc[0]
    passed = {c: df[(df.critic == c) & df.outside]["step"].min() for c in ("official", "diffbench")}
    lines = ["# In-support softmax Q-learning: the official CEP critic beside ours, same inputs", "",
             made_by(command, seconds, code_version()), "", f"Official code: {describe(official)}.", "",
             f"Dataset {dataset}; support actions {support}; both critics 3x{OFFICIAL_WIDTH}, batch 256, Adam 3e-4, "
             f"Polyak 0.005, gamma 0.99, beta_Q 1, the same batches. Q_0 is each critic's target network on "
             f"{PROBE:,} dataset states with their dataset actions. The rewards allow "
             f"[{lo:.4g}, {hi:.4g}]; the data's discounted returns average {df['mc_return_mean'].iloc[0]:.1f}.", "",
             "First step outside the allowed range: " + "; ".join(
                 f"{c} {int(s):,}" if pd.notna(s) else f"{c} none" for c, s in passed.items()) + ".", "",
             "| step | Q_0 official | Q_0 diffbench | spread over support, official | diffbench | correlation with "
             "the data's returns, official | diffbench |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for step in wide.index:
        lines.append(f"| {step:,} | {wide.loc[step, 'official']:.1f} | {wide.loc[step, 'diffbench']:.1f} | "
                     f"{spread.loc[step, 'official']:.2f} | {spread.loc[step, 'diffbench']:.2f} | "
                     f"{corr.loc[step, 'official']:.2f} | {corr.loc[step, 'diffbench']:.2f} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
