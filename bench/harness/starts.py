"""A start for the runs made before the harness evaluated one (`Algorithm.start`: a fine-tuner's chain before
fine-tuning), from the checkpoints in their run directories, so that the report pairs them with it too.

A start is added only where this machine and code act as the run did: its trained policy, evaluated again here on
its final episodes, must return exactly what the store holds for them. Then the start's episodes are the ones the
run would have recorded itself. Anything else (no run directory, other dataset bytes, other returns: another CPU
or torch) leaves the run as it was and says why. The run's diagnostics name the code and machine that added it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench.harness.evaluation import check_eval_env, evaluate
from bench.harness.provenance import code_version, hardware
from bench.harness.runner import START, evaluate_start, run_directory
from bench.harness.store import ResultsStore
from envs import catalog
from envs.errors import DatasetError
from policies import registry
from policies.base import Algorithm
from policies.errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class Outcome:
    run_id: str
    label: str  # algorithm, dataset, seed
    added: bool
    why: str  # what was added (its score), or why nothing was


def has_start(algorithm: str) -> bool:
    """Whether the algorithm evaluates a start (overrides `Algorithm.start`); False for one not registered here."""
    try:
        return registry.get(algorithm).start is not Algorithm.start
    except ConfigError:
        return False


def missing_starts(runs: pd.DataFrame, final: pd.DataFrame) -> pd.DataFrame:
    """A store's finished runs (its `runs` table) of algorithms with a start that hold none in `final_scores`."""
    held = set(final.loc[final["variant"] == START, "run_id"]) if not final.empty else set()
    if runs.empty:
        return runs
    return runs[(runs["status"] == "finished") & runs["algorithm"].map(has_start) & ~runs["run_id"].isin(held)]


def add_starts(store: ResultsStore, dry_run: bool = False, log=print) -> list[Outcome]:
    """Evaluate and record the start of every run `missing_starts` names; `dry_run`: check, record nothing."""
    out = []
    final = store.table("final_scores")
    for run in missing_starts(store.table("runs"), final).itertuples():
        label = f"{run.algorithm} {run.dataset} seed {run.seed}"
        try:
            trained = final[(final["run_id"] == run.run_id) & (final["variant"] == "default")]
            outcome = _add_one(store, run, trained.sort_values("episode"), label, dry_run)
        except (CheckpointError, DatasetError, ConfigError, OSError) as exc:
            outcome = Outcome(run.run_id, label, False, f"could not be read here: {exc}")
        done = ("would be added" if dry_run else "added") if outcome.added else "left as it was"
        log(f"{outcome.run_id} ({outcome.label}): {done}, {outcome.why}")
        out.append(outcome)
    return out


def _add_one(store: ResultsStore, run, stored: pd.DataFrame, label: str, dry_run: bool) -> Outcome:
    """`stored`: the run's final episodes of its trained policy, in order."""
    workdir = run_directory(store.path.parent, run.algorithm, run.dataset, run.seed, run.run_id)
    if not workdir.is_dir():
        return Outcome(run.run_id, label, False, f"no run directory {workdir} (its checkpoints were not kept here)")
    protocol = json.loads(run.config).get("protocol", {})
    if run.dataset_content and catalog.fingerprint(run.dataset) != run.dataset_content:
        return Outcome(run.run_id, label, False, f"the local copy of {run.dataset} holds other bytes than the run's "
                                                 f"({run.dataset_content})")
    ds = catalog.load_dataset(run.dataset, reward_transform=protocol.get("reward_transform"))
    max_steps = check_eval_env(ds)
    episodes, seed = int(protocol.get("episodes", 10)), int(protocol.get("eval_seed", 0))
    algo = registry.get(run.algorithm).load(workdir, ds, device="cpu", every_stage=True)
    recorded = stored["return"].to_numpy(dtype=np.float64)
    again = evaluate(algo, ds, episodes=episodes, seed=seed, max_steps=max_steps).returns.astype(np.float64)
    if len(recorded) != len(again) or not np.array_equal(recorded, again):
        differ = int((recorded != again).sum()) if len(recorded) == len(again) else "all"
        return Outcome(run.run_id, label, False, f"its policy evaluated again here returns otherwise on {differ} of "
                                                 f"{len(recorded)} episodes (another CPU or library made it)")
    row, rows = evaluate_start(algo, ds, episodes, seed, max_steps)
    scored = row["score_mean"] is not None
    score, trained = (row["score_mean"], stored["score"].mean()) if scored else (row["return_mean"], stored["return"].mean())
    if not dry_run:
        store.add_start(run.run_id, row, rows, {"added": time.time(), "code_version": code_version(),
                                                 "hardware": hardware(), "reproduced_final_episodes": len(again)})
    what = "score" if scored else "return"
    return Outcome(run.run_id, label, True, f"its final {len(again)} episodes reproduced exactly; {what}: start "
                                            f"{score:.1f}, trained {trained:.1f}")
