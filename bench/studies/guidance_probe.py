"""What QGPO's guidance does to a trained run's actions, read off its checkpoints: how far each scale moves the
actions from s = 0's (the same noise), how much Q_0 says that gains, how many land on the action box's edge, and
how closely f_phi follows beta Q_0 near t = 0. When guidance lowers the score, this tells an f_phi that did not
learn its target (actions moved along directions Q_0 does not prefer) from a Q_0 that is wrong where the guided
actions go (a gain in Q_0 that the env does not pay).

    python -m bench.studies.guidance_probe RUN_DIR [RUN_DIR ...] [--scales 0,1,3] [--states 1000]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from policies.algorithms.qgpo import QGPO, energy_fit_by_time
from bench.studies.mean_action import trained_policy
from policies.core.checkpoint import load_checkpoint
from policies.core.critics import probe_index, q_values

EDGE = 0.99  # an action component this close to the box's bound is on its edge


def load_run(workdir: Path) -> tuple[QGPO, Any]:
    """A finished QGPO run with its critic and support actions restored beside its policy, and its dataset."""
    workdir = Path(workdir)
    algo, ds = trained_policy(workdir, QGPO)
    for stage in ("support", "critic"):
        algo.restore(stage, load_checkpoint(workdir / f"{stage}.pt", algorithm=algo.owners(stage), stage=stage,
                                            dims=algo.dims))
    return algo, ds


@torch.no_grad()
def probe(workdir: Path, scales: Sequence[float] = (0.0, 1.0, 3.0), states: int = 1000,
          seed: int = 0) -> pd.DataFrame:
    """One row per scale, and one for the data's own actions, on a seeded draw of the dataset's states. The data row's
    shift is the distance between a state's data action and its s = 0 sample: the behaviour's own spread, the
    scale on which a guided shift is small or large."""
    algo, ds = load_run(workdir)
    t = ds.transitions
    rows = probe_index(len(t.observations), states, seed)
    obs = t.observations[rows]
    low, high = torch.as_tensor(algo.action_low), torch.as_tensor(algo.action_high)

    def describe(what: str, actions: torch.Tensor, base: torch.Tensor | None) -> dict[str, Any]:
        edge = ((actions - low).abs() <= (1 - EDGE) * (high - low) / 2) | \
               ((high - actions).abs() <= (1 - EDGE) * (high - low) / 2)
        return {"actions": what, "Q_0": float(q_values(algo.q_target, obs, actions).mean()),
                "shift from s = 0 (L2)": float((actions - base).norm(dim=-1).mean()) if base is not None else np.nan,
                "share on the box's edge": float(edge.double().mean())}

    out, base = [], None
    for scale in scales:
        algo.seed(seed)
        actions = torch.as_tensor(algo.act(obs.numpy(), guidance_scale=float(scale)), dtype=obs.dtype)
        base = actions if base is None else base
        out.append(describe(f"s = {scale:g}", actions, base))
    out.append(describe("data", t.actions[rows], base))
    support = algo._support["support"][rows]
    fit = energy_fit_by_time(algo.energy, algo.behaviour.schedule, obs, support, q_values(algo.q_target, obs, support),
                             algo.config.beta, seed=seed)
    table = pd.DataFrame(out)
    table.attrs["fit_by_time"] = fit
    return table


def main(argv: Sequence[str] | None = None) -> int:
    from bench.reports.render import markdown_table

    parser = argparse.ArgumentParser(prog="python -m bench.studies.guidance_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="QGPO run directories (with behaviour, support, critic, energy .pt)")
    parser.add_argument("--scales", default="0,1,3", help="guidance scales; the first is the one shifts are from")
    parser.add_argument("--states", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    scales = [float(s) for s in args.scales.split(",")]
    for run in args.runs:
        table = probe(Path(run), scales, args.states, args.seed)
        print(f"## {run}\n\n{markdown_table(table.round(3))}\n")
        fit = pd.DataFrame(table.attrs["fit_by_time"]).round(3)
        print("f_phi against beta Q_0 over each state's support at fixed diffusion times:\n")
        print(markdown_table(fit) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
