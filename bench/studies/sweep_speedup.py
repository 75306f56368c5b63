"""A sweep's cost before and after a code change, measured side by side (`diffbench perf speedup SPEC --before REV`):
every algorithm of the spec runs at a small fraction of its preset's budget, once with the code at REV and once with
this checkout's, in turn, on one machine, each version into its own store (so shared stages are trained once per
version, as in the sweep). Per algorithm and cost category (each trained stage, each evaluation, the rest), the
ratio of the two versions' core-seconds; and whether the two versions computed the same numbers (config, stage
losses, evaluation scores).

Why a probe and not two whole sweeps: the leaderboard spec is a hundred-odd core-hours; the ratios of a stage's
cost are those of its steps, which a few percent of the steps measure. What the probe does not see, it says:
a one-off compile is amortised over 3% of the steps here, not all of them (so it errs against the newer code),
and periodic evaluation takes the final evaluation's ratio (the same acting code; the probe sets no curve points).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from bench.harness.provenance import made_by
from bench.harness.store import ResultsStore
from bench.harness.sweep import SweepSpec
from bench.reports.sweep_cost import PERIODIC, run_costs
from policies import registry
from policies.errors import ConfigError

VERSIONS = ("before", "after")
ROOT = Path(__file__).resolve().parent.parent.parent
FINAL = "final evaluation"


def probe_overrides(algorithm: str, preset: str, fraction: float) -> dict[str, int]:
    """The algorithm's budget fields at `fraction` of the preset's values (at least one step each)."""
    cls = registry.get(algorithm)
    config = cls.presets[preset]
    return {field: max(1, round(getattr(config, field) * fraction)) for field in cls.budget_fields}


def worktree(repo: Path, rev: str, where: Path) -> Path:
    """A detached git worktree of `rev` at `where` (reused when it is already there at that commit)."""
    sha = _git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}")
    if (where / ".git").exists() and _git(where, "rev-parse", "HEAD") == sha:
        return where
    _git(repo, "worktree", "add", "--force", "--detach", str(where), sha)
    return where


def _git(cwd: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ConfigError(f"git {' '.join(args)} failed in {cwd}: {getattr(exc, 'stderr', '') or exc}; "
                          "--before needs a commit of this checkout's repository (or give --before-tree)") from None


def run_probe(tree: Path, store: Path, algorithm: str, dataset: str, preset: str, seed: int,
              overrides: dict[str, int], extra: list[str]) -> None:
    """One run of the code in `tree`, one torch thread (a sweep worker's), in a process of its own."""
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "bench.cli", "run", algorithm, dataset, "--preset", preset, "--seed", str(seed),
           "--results", str(store), "--no-progress", "--curve-points", "0", *extra,
           *[f"{k}={v}" for k, v in overrides.items()]]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{algorithm} on {dataset} failed with the code in {tree} (exit {done.returncode}):\n"
                           f"{done.stderr[-2000:]}")


def measure(spec: SweepSpec, before_tree: Path | Callable[[], Path], after_tree: Path, dataset: str, fraction: float,
            workdir: Path, seed: int = 0, progress=print) -> pd.DataFrame:
    """Both versions' probe runs of every algorithm of `spec` on `dataset`, taken in turn (which goes first
    alternates by algorithm); one row per (algorithm, version, category) of core-seconds."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"--fraction must lie in (0, 1], got {fraction}")
    trees: dict[str, Path | Callable[[], Path]] = dict(zip(VERSIONS, (before_tree, after_tree)))
    for i, algorithm in enumerate(spec.algorithms):
        overrides = {**spec.overrides_for(algorithm), **probe_overrides(algorithm, spec.preset, fraction)}
        extra = [f"--{flag}={value}" for flag, value in (("episodes", spec.episodes),
                                                           ("selection-episodes", spec.selection_episodes),
                                                           ("eval-seed", spec.eval_seed),
                                                           ("reward-transform", spec.reward_transform)) if value]
        if spec.guidance_scales and registry.get(algorithm).guided:
            extra.append("--guidance-scales=" + ",".join(str(s) for s in spec.guidance_scales))
        for version in (VERSIONS if i % 2 == 0 else VERSIONS[::-1]):
            store = workdir / version
            if _finished(store, algorithm, dataset, seed):
                continue  # a measurement resumed: this run is in its store already
            progress(f"  {algorithm} ({version}): {', '.join(f'{k}={v}' for k, v in overrides.items())}")
            if callable(trees[version]):  # made only when a run is left to make (a resumed report needs no tree)
                trees[version] = trees[version]()
            run_probe(trees[version], store, algorithm, dataset, spec.preset, seed, overrides, extra)
    return costs(workdir, dataset, seed)


def _finished(store: Path, algorithm: str, dataset: str, seed: int) -> bool:
    return (store / "results.sqlite").exists() and algorithm in set(_runs(store, dataset, seed)["algorithm"])


def _runs(store: Path, dataset: str, seed: int) -> pd.DataFrame:
    runs = ResultsStore(store).table("runs")
    runs = runs[(runs["dataset"] == dataset) & (runs["seed"] == seed) & (runs["status"] == "finished")]
    return runs.sort_values("finished").drop_duplicates("algorithm", keep="last")


def costs(workdir: Path, dataset: str, seed: int = 0) -> pd.DataFrame:
    frames = []
    for version in VERSIONS:
        store = ResultsStore(workdir / version)
        part = run_costs(store, None, _runs(workdir / version, dataset, seed))
        frames.append(part.assign(version=version))
    return pd.concat(frames, ignore_index=True)


def ratios(costs: pd.DataFrame) -> pd.DataFrame:
    """Per (algorithm, category): before and after core-seconds and before / after (periodic evaluation, which
    the probe does not run, at the final evaluation's ratio)."""
    wide = costs.pivot_table(index=["algorithm", "category"], columns="version", values="core_seconds",
                             aggfunc="sum").reindex(columns=list(VERSIONS)).reset_index()
    wide["ratio"] = wide["before"] / wide["after"]
    finals = wide[wide["category"] == FINAL].set_index("algorithm")
    periodic = finals.assign(category=PERIODIC, before=np.nan, after=np.nan).reset_index()
    return pd.concat([wide, periodic[wide.columns]], ignore_index=True)


def agreement(workdir: Path, dataset: str, seed: int = 0) -> pd.DataFrame:
    """Per algorithm, whether the two versions computed the same numbers: the same config (budget, settings), the
    largest relative difference of any logged stage loss, and the final evaluation's score under each."""
    runs = {v: _runs(workdir / v, dataset, seed).set_index("algorithm") for v in VERSIONS}
    scores = {v: _final_scores(workdir / v, runs[v]) for v in VERSIONS}
    rows = []
    for algorithm in runs["after"].index.intersection(runs["before"].index):
        b, a = runs["before"].loc[algorithm], runs["after"].loc[algorithm]
        gap = _loss_gap(json.loads(b.stage_losses or "{}"), json.loads(a.stage_losses or "{}"))
        sb, sa = scores["before"].get(algorithm, np.nan), scores["after"].get(algorithm, np.nan)
        rows.append({"algorithm": algorithm, "same config": _config(b.config) == _config(a.config),
                     "stage losses, largest relative gap": "none logged" if gap is None else f"{gap:.1e}",
                     "score before": round(sb, 3), "score after": round(sa, 3),
                     "score gap": round(abs(sa - sb), 3)})
    return pd.DataFrame(rows)


def made_with(workdir: Path, dataset: str, seed: int = 0) -> dict[str, str]:
    """Per version, the code its probe runs recorded (a measurement resumed under newer code names both)."""
    return {v: ", ".join(sorted(_runs(workdir / v, dataset, seed)["code_version"].dropna().unique())) or "?"
            for v in VERSIONS}


def probe_seconds(workdir: Path, dataset: str, seed: int = 0) -> float:
    """The probe runs' wall seconds, both versions (what the measurement took, resumed or not)."""
    return float(sum((r["finished"] - r["started"]).sum() for r in (_runs(workdir / v, dataset, seed) for v in VERSIONS)))


def core_shares(workdir: Path, dataset: str, seed: int = 0) -> pd.DataFrame:
    """Per algorithm and version, the share of a core its training got: process CPU seconds over wall seconds of
    its training, as its final evaluation recorded them (1 on an idle core; alike in both versions when other work
    on the machine weighed on both alike)."""
    rows = {}
    for version in VERSIONS:
        runs = _runs(workdir / version, dataset, seed).set_index("run_id")
        evals = ResultsStore(workdir / version).table("evaluations")
        evals = evals[(evals["stage"] == "final") & evals["run_id"].isin(runs.index)]
        evals = evals.dropna(subset=["train_seconds", "cpu_seconds"]).drop_duplicates("run_id", keep="last")
        rows[f"core share {version}"] = pd.Series(
            (evals["cpu_seconds"] / evals["train_seconds"]).values, index=runs.loc[evals["run_id"], "algorithm"])
    return pd.DataFrame(rows).round(2)


def _config(text: str) -> dict:
    config = json.loads(text)
    config.pop("device", None)
    return config


def _loss_gap(before: dict, after: dict) -> float | None:
    gaps = []
    for stage in before.keys() & after.keys():
        b, a = dict(map(tuple, before[stage])), dict(map(tuple, after[stage]))
        gaps += [abs(a[k] - b[k]) / max(abs(b[k]), 1e-12) for k in b.keys() & a.keys()]
    return max(gaps) if gaps else None


def _final_scores(store: Path, runs: pd.DataFrame) -> dict[str, float]:
    evals = ResultsStore(store).table("evaluations")
    evals = evals[(evals["stage"] == "final") & evals["run_id"].isin(runs["run_id"])]
    by_run = evals.groupby("run_id")["score_mean"].max()  # a guided run: a row per scale, the best (alike in both)
    return {algorithm: float(by_run.get(run.run_id, np.nan)) for algorithm, run in runs.iterrows()}


def write_report(table: pd.DataFrame, agree: pd.DataFrame, out: Path, command: str, before: str, after: str,
                 dataset: str, fraction: float, seconds: float | None = None,
                 shares: pd.DataFrame | None = None) -> None:
    from bench.reports.render import markdown_table

    out.parent.mkdir(parents=True, exist_ok=True)
    table.assign(before_code=before, after_code=after, dataset=dataset, fraction=fraction).to_csv(
        out.with_suffix(".csv"), index=False)
    shown = table.assign(**{c: (table[c] / 60).round(2).astype(object).where(table[c].notna(), "not run")
                            for c in VERSIONS}, ratio=table["ratio"].round(2))
    shown = shown.rename(columns={"before": "before core-min", "after": "after core-min", "ratio": "before / after"})
    per_algo = table.dropna(subset=["before", "after"]).groupby("algorithm")[list(VERSIONS)].sum() / 60
    per_algo = per_algo.assign(ratio=per_algo["before"] / per_algo["after"]).round(2)
    if shares is not None:
        per_algo = per_algo.join(shares)
    lines = [f"# A sweep's cost before and after: {before} against {after}", "",
             made_by(command, seconds, after), "",
             f"Every algorithm of the spec ran once with each code version on {dataset} (seed 0) at "
             f"{fraction:g} of its preset's budget, the two in turn, one torch thread each, in one invocation on "
             "one machine. Core-seconds per category as `diffbench perf sweep` counts them. Periodic evaluation "
             "(not run by the probe) takes the final evaluation's ratio. A one-off compile weighs more in a probe "
             "than in a whole run, so the ratios err against the newer code where it compiles.", "",
             "## Same numbers?", "", markdown_table(agree) if len(agree) else "(no algorithm ran under both)", "",
             "## Per algorithm (the probe's own totals)", "",
             "`core share`: the share of a core each probe's training got (process CPU seconds over wall seconds; 1 "
             "on an idle core): alike in both versions, other work on the machine weighed on both alike.", "",
             markdown_table(per_algo.reset_index().rename(columns={"before": "before core-min",
                                                                    "after": "after core-min",
                                                                    "ratio": "before / after"})), "",
             "## Per algorithm and category", "", markdown_table(shown), ""]
    out.write_text("\n".join(lines))


def read_ratios(path: Path) -> pd.DataFrame:
    """`write_report`'s CSV: the ratio table, with its code versions and source in `attrs`."""
    frame = pd.read_csv(path)
    missing = {"algorithm", "category", *VERSIONS, "ratio", "before_code", "after_code"} - set(frame.columns)
    if missing:
        raise KeyError(f"no column {', '.join(sorted(missing))}")
    table = frame[["algorithm", "category", *VERSIONS, "ratio"]].copy()
    table.attrs = {"source": str(path), "before": frame["before_code"].iloc[0], "after": frame["after_code"].iloc[0]}
    return table


def before_code(before: str | None, tree: str | None, workdir: Path) -> Callable[[], Path]:
    """The code to time as "before", checked now and made when first needed (a resumed report needs none): a worktree
    of a commit of this repository, or a tree given as is."""
    if tree:
        path = Path(tree).resolve()
        if not (path / "bench" / "cli.py").exists():
            raise ConfigError(f"--before-tree {path} holds no diffbench checkout (no bench/cli.py)")
        return lambda: path
    if not before:
        raise ConfigError("give --before REV (a commit of this repository) or --before-tree PATH")
    return lambda: worktree(ROOT, before, workdir / "before-tree")
