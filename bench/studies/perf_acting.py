"""Acting throughput of every registered algorithm as a run acts (`diffbench perf acting`): each built at a
preset's networks and settings (the cpu preset by default, the one the leaderboard runs), timed through its own
`act` (observations in, clipped actions out: candidate draws, critic picks and host copies included), all in one
run, the calls taken in turn so that the machine's drift is shared and the ratios hold. Weights are untrained:
acting costs the same whatever their values. Algorithms whose policy exists only after fine-tuning (DDPO, CTRL,
DxMI) cannot act unfitted and are timed by `diffbench perf samplers` instead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.harness.provenance import code_version, made_by
from bench.studies.perf import _time_interleaved, device_label
from policies import registry
from policies.errors import ConfigError

BATCHES = (10, 256)
SHAPE = (17, 6)  # HalfCheetah's and Walker2d's observation and action sizes


def build(name: str, preset: str, device: str):
    """`name` at `preset`'s networks, seeded, or the reason it cannot act before it is fitted."""
    obs_dim, act_dim = SHAPE
    cls = registry.get(name)
    algo = cls(registry.make_config(name, preset, {"device": device}), obs_dim, act_dim,
               -np.ones(act_dim, np.float32), np.ones(act_dim, np.float32))
    algo.seed(0)
    try:
        algo.act(np.zeros((1, obs_dim), np.float32))
    except ConfigError as exc:
        return str(exc)
    return algo


def measure(algorithms: list[str], preset: str = "cpu", device: str = "cpu", repeats: int = 20, warmup: int = 3
            ) -> tuple[pd.DataFrame, dict[str, str]]:
    """One row per (algorithm, batch): actions/s (median over `repeats` calls) and NFE per action; and the
    algorithms left out, with why."""
    built, skipped = {}, {}
    for name in algorithms:
        algo = build(name, preset, device)
        if isinstance(algo, str):
            skipped[name] = algo
        else:
            built[name] = algo
    rng = np.random.default_rng(0)
    rows = []
    for batch in BATCHES:
        obs = rng.standard_normal((batch, SHAPE[0])).astype(np.float32)
        calls = [lambda a=a: a.act(obs) for a in built.values()]
        with torch.inference_mode():
            seconds = _time_interleaved(calls, torch.device(device), repeats * (10 if batch == 10 else 1), warmup)
        rows += [{"algorithm": name, "preset": preset, "batch": batch, "actions_per_second": batch / s,
                  "nfe_per_action": algo.cost.get("nfe_per_action"), "device": device_label(device)}
                 for (name, algo), s in zip(built.items(), seconds)]
    return pd.DataFrame(rows), skipped


def write_report(rows: pd.DataFrame, skipped: dict[str, str], out: Path, command: str, baseline: str = "qgpo") -> None:
    """The markdown table, with each algorithm's rate over `baseline`'s, and the rows as CSV beside it."""
    version = code_version()  # before the CSV is written: a committed CSV rewritten would read as +dirty
    out.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out.with_suffix(".csv"), index=False)
    wide = rows.pivot(index="algorithm", columns="batch", values="actions_per_second")
    nfe = rows.groupby("algorithm")["nfe_per_action"].first()
    preset = rows["preset"].iloc[0]
    lines = [f"# Acting throughput at the `{preset}` preset: every algorithm's own act, one run", "",
             made_by(command, None, version, ("torch",)), "",
             f"Each algorithm built at its `{preset}` preset's networks and acting settings, observation size {SHAPE[0]}, "
             f"action size {SHAPE[1]}, float32, one torch thread, on {rows['device'].iloc[0]}; timed through `act` (numpy "
             "in and out, as a run's evaluation calls it), the algorithms' calls taken in turn, medians after warm-up. "
             f"`vs {baseline}`: actions/s over {baseline}'s in this same run.", "",
             "| algorithm | NFE per action | " + " | ".join(f"actions/s, batch {b}" for b in BATCHES) +
             (" | " + " | ".join(f"vs {baseline}, batch {b}" for b in BATCHES) if baseline in wide.index else "") + " |",
             "|---|---:|" + "---:|" * (len(BATCHES) * (2 if baseline in wide.index else 1))]
    for name in wide.index:
        cells = [f"{wide.loc[name, b]:,.0f}" for b in BATCHES]
        if baseline in wide.index:
            cells += [f"{wide.loc[name, b] / wide.loc[baseline, b]:.2f}×" for b in BATCHES]
        lines.append(f"| {name} | {nfe[name]:g} | " + " | ".join(cells) + " |")
    if skipped:
        lines += ["", "Not timed here (`diffbench perf samplers` times their samplers): " +
                  "; ".join(f"{name} ({why})" for name, why in skipped.items()) + "."]
    out.write_text("\n".join(lines) + "\n")


def rates(path: Path, batch: int = 10) -> pd.DataFrame:
    """A written benchmark's actions/s and NFE per action at `batch`, by algorithm (for reports beside scores)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no acting benchmark there; make it with `diffbench perf acting --out "
                          f"{path.with_suffix('.md')}`")
    rows = pd.read_csv(path)
    if not {"algorithm", "batch", "actions_per_second"} <= set(rows.columns):
        raise ConfigError(f"{path}: not an acting benchmark's rows (written by `diffbench perf acting`)")
    return rows[rows["batch"] == batch].set_index("algorithm")
