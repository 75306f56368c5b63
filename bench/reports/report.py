"""What a comparison report says, computed from the results store; `bench.reports.render` writes it out.

An *entry* is what a table row compares: an algorithm with its preset (and a config tag when one
preset was run with different overrides) and, for guided algorithms, one guidance scale. A run's
score on a dataset is its mean normalised score over the final evaluation episodes; seeds are the
unit of replication, so intervals are over seeds (stratified by dataset for aggregates).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.reports import stats
from bench.reports.reference import load_reference, matching_dataset, same_protocol
from bench.reports.critic import critic_checks, guidance_checks
from bench.reports.gains import gains_over_behaviour, gains_over_start, unpaired
from bench.reports.sharing import shared_stage_savings, stage_agreement
from bench.harness.plan import identity_fields
from bench.harness.runner import CURVE_DEFAULTS, FAMILY_PROTOCOL, START
from bench.harness.provenance import run_threads
from bench.harness.store import ResultsStore
from envs import families
from policies import config as cfg_tools
from policies.competence import family_shortfall
from policies import registry
from policies.errors import ConfigError

REPS = 10_000  # bootstrap replicates (Agarwal et al. use 50k for papers; 10k keeps a report to seconds)


def domain(dataset: str) -> str:
    """The group a dataset averages into: its family (`envs.families`), marked when diffbench generated it."""
    group = families.family(dataset)
    return f"{group} (generated)" if families.is_generated(dataset) else group


def _variant_label(variant: str, scale: float | None) -> str:
    if scale is None or (isinstance(scale, float) and np.isnan(scale)):
        return ""
    return " s=0 (diffusion BC)" if scale == 0 else f" s={scale:g}"


def table_settings(algorithm: str, preset: str, dataset: str) -> dict[str, Any]:
    """The settings `preset` takes on `dataset` from the algorithm's own tables (a paper's per-domain and
    per-dataset values: SRPO's beta, FQL's alpha, DAC's rho), as a run resolves them; {} for an unknown algorithm
    or preset (a store may hold runs of a plug-in that is not installed here)."""
    try:
        cls = registry.get(algorithm)
        if preset not in cls.presets:
            return {}
        table = {**cls.domain_overrides(preset, families.family(dataset)), **cls.dataset_overrides(preset, dataset)}
    except ConfigError:
        return {}
    return json.loads(json.dumps(table))


def _same(a: Any, b: Any) -> bool:
    """Equal as the store holds them (JSON: a tuple and a list alike)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _as_preset(algorithm: str, preset: str, dataset: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """`cfg` with every value that the algorithm's tables gave this dataset put back to the preset's own: a preset
    run on several datasets with its paper's per-dataset settings is one entry, as a paper's row is one method.
    A value the user set over the table's stays, and parts the entry."""
    table = table_settings(algorithm, preset, dataset)
    taken = [k for k, v in table.items() if k in cfg and _same(cfg[k], v)]
    if not taken:
        return cfg
    base = cfg_tools.to_dict(registry.make_config(algorithm, preset))
    return {**cfg, **{k: base.get(k) for k in taken}}


def _config_tags(config: str, run: tuple[str, str, str]) -> tuple[str, str]:
    """Short hashes (strict, loose) of a run's config without its seed, nor the settings its algorithm's tables give
    its dataset (`_as_preset`): runs that differ only in these share them; the loose one is also blind to the
    family's protocol settings."""
    cfg = json.loads(config)
    cfg.pop("seed", None)
    cfg = _as_preset(*run, cfg)
    protocol = {k: v for k, v in cfg.get("protocol", {}).items() if k not in CURVE_DEFAULTS}  # logging: no entry
    family_blind = {k: v for k, v in protocol.items() if k not in FAMILY_PROTOCOL}  # one setting across families
    return tuple(hashlib.sha256(json.dumps({**cfg, "protocol": p}, sort_keys=True).encode()).hexdigest()[:6]
                 for p in (protocol, family_blind))


def _entries(df: pd.DataFrame) -> pd.Series:
    """algorithm[preset], with a config tag where the algorithm ran with several configs at that preset (its
    paper's per-dataset settings aside)."""
    pairs = [_config_tags(c, k) for c, k in zip(df["config"], zip(df["algorithm"], df["preset"], df["dataset"]))]
    strict = pd.Series([s for s, _ in pairs], index=df.index, dtype=object)
    loose = pd.Series([lo for _, lo in pairs], index=df.index, dtype=object)
    # two protocols on one dataset under one loose tag: that algorithm and preset keeps the strict tags
    split = (df.assign(_l=loose, _s=strict).groupby(["algorithm", "preset", "_l", "dataset"])["_s"].nunique() > 1)
    strict_keys = {(a, p) for a, p, _, _ in split[split].index}
    tag = pd.Series([s if (a, p) in strict_keys else lo for a, p, s, lo in
                     zip(df["algorithm"], df["preset"], strict, loose)], index=df.index)
    tags = tag.groupby([df["algorithm"], df["preset"]]).nunique()
    base = df["algorithm"] + "[" + df["preset"] + "]"
    many = [tags[(a, p)] > 1 for a, p in zip(df["algorithm"], df["preset"])]
    return base.where(~np.asarray(many, dtype=bool), base + "#" + tag)


def table_settings_notes(df: pd.DataFrame) -> list[str]:
    """For each entry whose runs took settings from its algorithm's tables other than the preset's own values,
    those settings per dataset: the one entry stands for different values on different datasets, and the report
    says which."""
    notes = []
    for entry, g in df.drop_duplicates(["run_entry", "dataset"]).groupby("run_entry"):
        taken = []
        for algorithm, preset, dataset, config in zip(g["algorithm"], g["preset"], g["dataset"], g["config"]):
            cfg, table = json.loads(config), table_settings(algorithm, preset, dataset)
            base = cfg_tools.to_dict(registry.make_config(algorithm, preset)) if table else {}
            table = {k: v for k, v in table.items() if k in cfg and _same(cfg[k], v) and not _same(base.get(k), v)}
            if table:
                taken.append(f"{dataset}: " + ", ".join(f"{k} {json.dumps(v)}" for k, v in sorted(table.items())))
        if taken:
            notes.append(f"{entry} takes per-dataset settings from its algorithm's tables (the paper's or official "
                         f"code's values, applied by the preset, not tuned here): " + "; ".join(sorted(taken)))
    return notes


def entry_footnotes(df: pd.DataFrame) -> list[str]:
    """For each algorithm split into several entries (#tag), the config fields that part them, with each tag's value:
    a hash that stays in a table is explained."""
    notes = []
    tagged = df[df["run_entry"].str.contains("#", regex=False)].drop_duplicates("run_entry")
    for (algorithm, preset), g in tagged.groupby(["algorithm", "preset"]):
        flats = {entry: identity_fields(json.loads(config)) for entry, config in zip(g["run_entry"], g["config"])}
        keys = sorted({k for f in flats.values() for k in f})
        differ = [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flats.values()}) > 1]
        values = "; ".join(f"{entry.split('#', 1)[1]}: " + ", ".join(f"{k} {flats[entry].get(k)}" for k in differ)
                           for entry in sorted(flats))
        notes.append(f"{algorithm}[{preset}] is {len(flats)} entries, one per config; they differ in "
                     f"{', '.join(differ) or 'nothing but their protocol family'} ({values})")
    return notes


# what must match for two runs on one dataset to be compared: the budget preset and the evaluation protocol's settings
# that every algorithm shares (scale choice and guidance scales are the algorithm's own, compared as entries)
COHORT_KEYS = ("episodes", "eval_seed", "checkpoint", "reward_transform")


def cohort(preset: str, protocol: dict[str, Any]) -> str:
    """A run's comparison group on its dataset: "preset cpu, 100 episodes, ..." (only settings every run records)."""
    return ", ".join([f"preset {preset}"] + [f"{k} {protocol[k]}" for k in COHORT_KEYS if k in protocol])


def cohort_difference(a: str, b: str) -> str:
    """What parts two cohorts: "preset cpu vs paper; episodes 10 vs 100"."""
    pa, pb = dict(part.rsplit(" ", 1) for part in a.split(", ")), dict(part.rsplit(" ", 1) for part in b.split(", "))
    return "; ".join(f"{k} {pa.get(k, '?')} vs {pb.get(k, '?')}" for k in dict.fromkeys([*pa, *pb])
                     if pa.get(k) != pb.get(k))


def entry_cohorts(df: pd.DataFrame, entry: str, datasets: list[str] | None = None) -> dict[str, str]:
    """dataset -> the cohort of the entry's runs there (several joined by " | " when an entry mixes them)."""
    g = df[df["entry"] == entry]
    if datasets is not None:
        g = g[g["dataset"].isin(datasets)]
    return {d: " | ".join(sorted(set(c))) for d, c in g.groupby("dataset")["cohort"]}


SELECTED = " s=held-out choice"  # the scale each run chose on its selection episodes
BEST_ON_REPORTED = " s=best on reported episodes"  # the per-dataset best scale: optimistic, the published protocol


UNRECORDED = "unrecorded"  # runs from stores before the dataset's content was recorded with each run


def _deduplicate(runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One run per (algorithm, dataset and its content, seed, config with its protocol): the latest finished; the others are
    named in a note. A copied or touched dataset file, or the same run in two stores merged, is not a second seed."""
    content = runs["dataset_content"].fillna(UNRECORDED) if "dataset_content" in runs else UNRECORDED
    key = runs["algorithm"] + "\x00" + runs["dataset"] + "\x00" + content + "\x00" + runs["seed"].astype(str) + \
        "\x00" + runs["config"].map(lambda c: json.dumps(json.loads(c), sort_keys=True))
    runs = runs.assign(_key=key).sort_values("finished", kind="stable")
    dropped = runs[runs.duplicated("_key", keep="last")]
    kept = runs.drop_duplicates("_key", keep="last")
    notes = []
    for _, d in dropped.iterrows():
        keeper = kept.loc[kept["_key"] == d["_key"], "run_id"].iloc[0]
        notes.append(f"run {d['run_id']} repeats run {keeper} ({d['algorithm']} on {d['dataset']}, seed {d['seed']}, "
                     f"same config and protocol); counted once, keeping {keeper}, the later")
    return kept.drop(columns="_key"), notes


def run_scores(store: ResultsStore, run_ids: set[str] | None = None) -> pd.DataFrame:
    """One row per (finished run, evaluated variant): its score and what it cost; plus, for runs that chose a
    guidance scale on held-out episodes, one row of the chosen scale's score on the reported episodes. `run_ids`:
    these runs alone (a spec's), so that other configs in the store give its entries no tags."""
    runs = store.table("runs")
    return _run_scores(store, runs if run_ids is None else runs[runs["run_id"].isin(run_ids)])[0]


def _run_scores(store: ResultsStore, runs: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[str]]:
    """`runs`: the store's runs table when the caller has read it already."""
    runs = store.table("runs") if runs is None else runs
    runs = runs[runs["status"] == "finished"]
    final = store.table("final_scores")
    if runs.empty or final.empty:
        return pd.DataFrame(), []
    runs, notes = _deduplicate(runs)
    final = final[final["run_id"].isin(runs["run_id"])]
    start = final[final["variant"] == START].groupby("run_id")["score"].mean()  # a reference, not an entry
    per = (final[final["variant"] != START]
           .groupby(["run_id", "variant"], dropna=False)
           .agg(guidance_scale=("guidance_scale", "first"), score=("score", "mean"), ret=("return", "mean"),
                episodes=("episode", "size"))
           .reset_index())
    evals = store.table("evaluations")
    aps = evals[evals["stage"] == "final"][["run_id", "variant", "actions_per_second"]]
    per = per.merge(aps, on=["run_id", "variant"], how="left")
    cols = ["run_id", "algorithm", "dataset", "seed", "preset", "config", "code_version", "hardware", "wall_seconds",
            "stage_seconds", "gradient_steps", "nfe_per_action", "selected_guidance_scale", "dataset_content"]
    df = per.merge(runs.reindex(columns=cols), on="run_id")
    df["start_score"] = df["run_id"].map(start).astype(float)  # NaN: the run evaluated no start
    df, split = _split_contents(df)
    notes += split
    df["run_entry"] = _entries(df)  # before the scale
    df["entry"] = df["run_entry"] + [_variant_label(v, s) for v, s in zip(df["variant"], df["guidance_scale"])]
    df["selection"] = "none"
    protocols = df["config"].map(lambda c: json.loads(c).get("protocol", {}))  # parsed once per row
    df["reward_transform"] = protocols.map(lambda p: p.get("reward_transform", "none"))
    df["cohort"] = [cohort(preset, p) for preset, p in zip(df["preset"], protocols)]  # the copies below keep theirs
    chosen = df[df["selected_guidance_scale"].notna() & (df["guidance_scale"] == df["selected_guidance_scale"])]
    chosen = chosen.assign(entry=chosen["run_entry"] + SELECTED, selection="held-out")
    df = pd.concat([df, chosen, _best_on_reported(df)], ignore_index=True)
    df["domain"] = df["dataset"].map(domain)
    return df, notes


def _split_contents(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """A dataset id whose runs trained on more than one content (regenerated under other library versions, or a
    different file under the same name) is that many datasets in every table: `id @content`; never pooled."""
    content = df["dataset_content"].fillna(UNRECORDED).astype(str)
    notes = []
    for dataset, g in df.groupby("dataset"):
        kinds = content[g.index]
        if kinds.nunique() < 2:
            continue
        df.loc[g.index, "dataset"] = dataset + " @" + kinds
        counts = ", ".join(f"{k} ({g.loc[kinds == k, 'run_id'].nunique()} runs)" for k in sorted(kinds.unique()))
        notes.append(f"{dataset}: its runs trained on {kinds.nunique()} different contents of the dataset ({counts}); "
                     "each is its own dataset here (`id @content`), never pooled. `diffbench datasets verify ID "
                     "--against RESULTS` says which one a local copy holds; the dataset card names the library versions "
                     "that made it")
    return df, notes


def _best_on_reported(df: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and run entry, every seed at the one scale with the best mean over seeds on the reported
    episodes: the choice the QGPO paper's per-task scale makes, kept apart and labelled as optimistic."""
    guided = df[df["guidance_scale"].notna()]
    rows = []
    for _, g in guided.groupby(["dataset", "run_entry"]):
        means = g.groupby("guidance_scale")["score"].mean()
        if len(means) < 2 or means.isna().all():
            continue
        best = g[g["guidance_scale"] == means.idxmax()]
        rows.append(best.assign(entry=best["run_entry"] + BEST_ON_REPORTED, selection="reported-episodes"))
    return pd.concat(rows, ignore_index=True) if rows else guided.iloc[:0].assign(selection=[])


@dataclass
class Report:
    scores: pd.DataFrame  # run_scores()
    per_dataset: pd.DataFrame  # dataset x entry: mean, std, CI over seeds, seeds, episodes, best-scale mark
    per_domain: pd.DataFrame  # domain x entry mean of dataset means, and "overall"
    aggregates: pd.DataFrame  # entry x metric: estimate, lower, upper (stratified bootstrap)
    improvement: pd.DataFrame  # pairs of entries on shared datasets: P(X > Y) with interval
    curves: pd.DataFrame  # learning curves: CURVE_COLUMNS
    cost: pd.DataFrame  # dataset x entry: NFE per action, actions/s, training wall time, gradient steps, mean score
    reference: pd.DataFrame  # published numbers for datasets we have, beside ours
    sharing: pd.DataFrame = field(default_factory=pd.DataFrame)  # sharing.shared_stage_savings
    critic: pd.DataFrame = field(default_factory=pd.DataFrame)  # critic.critic_checks
    guidance: pd.DataFrame = field(default_factory=pd.DataFrame)  # critic.guidance_checks
    plateau: pd.DataFrame = field(default_factory=pd.DataFrame)  # plateaus(): had each curve flattened?
    data_reference: pd.DataFrame = field(default_factory=pd.DataFrame)  # data_references(): the data's own score
    gains: pd.DataFrame = field(default_factory=pd.DataFrame)  # gains.gains_over_behaviour(): over diffusion BC, paired
    start_gains: pd.DataFrame = field(default_factory=pd.DataFrame)  # gains.gains_over_start(): over each run's start
    budget: pd.DataFrame = field(default_factory=pd.DataFrame)  # budgets(): what each entry trained with
    short: dict[str, str] = field(default_factory=dict)  # short_of_competence(): entries shown but ranked nowhere
    # short_cells(): (entry, dataset) shown but not ranked, its preset short of competence on the dataset's family
    short_cells: dict[tuple[str, str], str] = field(default_factory=dict)
    # filling_cells(): (entry, dataset) with fewer seeds than another entry there, left out of every comparison
    filling_cells: dict[tuple[str, str], str] = field(default_factory=dict)
    protocol: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.scores.empty


def _seed_interval(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    _, low, high = stats.bootstrap_interval(stats.mean, values[:, None], reps=REPS, seed=seed)
    return low, high


def _per_dataset(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (dataset, entry), g in df.groupby(["dataset", "entry"], sort=True):
        values = g.sort_values("seed")["score"].to_numpy(dtype=np.float64)
        if np.isnan(values).any():
            low = high = np.nan
        else:
            low, high = _seed_interval(values)
        scales = sorted(set(g["guidance_scale"].dropna()))
        rows.append({"dataset": dataset, "domain": g["domain"].iloc[0], "entry": entry,
                     "algorithm": g["algorithm"].iloc[0], "preset": g["preset"].iloc[0],
                     "guidance_scale": g["guidance_scale"].iloc[0], "selection": g["selection"].iloc[0],
                     "scales": ", ".join(f"{x:g}" for x in scales), "mean": values.mean(),
                     "std": values.std(ddof=1) if len(values) > 1 else np.nan, "ci_low": low, "ci_high": high,
                     "seeds": len(values), "episodes": int(g["episodes"].min())})
    return pd.DataFrame(rows)


def _per_domain(per_dataset: pd.DataFrame) -> pd.DataFrame:
    dom = per_dataset.groupby(["domain", "entry"])["mean"].agg(["mean", "size"]).reset_index()
    dom = dom.rename(columns={"size": "datasets"})
    overall = per_dataset.groupby("entry")["mean"].agg(["mean", "size"]).reset_index().rename(columns={"size": "datasets"})
    overall.insert(0, "domain", "overall")
    return pd.concat([dom, overall], ignore_index=True)


def score_matrix(df: pd.DataFrame, entry: str, datasets: list[str] | None = None) -> tuple[np.ndarray, list[str], int]:
    """(runs, tasks) scores of an entry; tasks with fewer seeds cut every task to the smallest count."""
    g = df[df["entry"] == entry]
    if datasets is not None:
        g = g[g["dataset"].isin(datasets)]
    cols = {d: gd.sort_values("seed")["score"].to_numpy(dtype=np.float64) for d, gd in g.groupby("dataset")}
    n = min(len(v) for v in cols.values())
    names = sorted(cols)
    return np.stack([cols[d][:n] for d in names], axis=1), names, n


def _aggregates(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    rows, notes = [], []
    for entry in sorted(df["entry"].unique()):
        m, names, n = score_matrix(df, entry)
        if np.isnan(m).any():
            notes.append(f"{entry}: some datasets have no normalised score; left out of the aggregates")
            continue
        if df[df["entry"] == entry].groupby("dataset").size().max() > n:
            notes.append(f"{entry}: seeds differ between datasets; aggregates use the first {n} of each")
        for metric, (point, low, high) in stats.aggregate_intervals({entry: m}, reps=REPS)[entry].items():
            rows.append({"entry": entry, "metric": metric, "estimate": point, "lower": low, "upper": high,
                         "datasets": len(names), "seeds": n})
    return pd.DataFrame(rows), notes


def _improvement(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """P(X > Y) for each pair of entries over the datasets where both ran in the same cohort; pairs that share
    datasets only under different presets or protocols are named in a note, never compared."""
    entries = sorted(df["entry"].unique())
    cohorts = {e: entry_cohorts(df, e) for e in entries}
    rows, parted = [], []
    for i, a in enumerate(entries):
        for b in entries[i + 1:]:
            both = sorted(set(cohorts[a]) & set(cohorts[b]))
            shared = [d for d in both if cohorts[a][d] == cohorts[b][d]]
            if both and not shared:
                parted.append(f"{a} / {b}: {cohort_difference(cohorts[a][both[0]], cohorts[b][both[0]])}")
            if not shared:
                continue
            x, _, _ = score_matrix(df, a, shared)
            y, _, _ = score_matrix(df, b, shared)
            if np.isnan(x).any() or np.isnan(y).any():
                continue
            point, low, high = stats.probability_of_improvement_interval(x, y, reps=REPS)
            rows.append({"x": a, "y": b, "p_x_better": point, "lower": low, "upper": high, "datasets": len(shared)})
    notes = [f"not compared (P(X > Y)), for they ran under different presets or protocols on every dataset they share: "
             + "; ".join(parted)] if parted else []
    return pd.DataFrame(rows), notes


CURVE_COLUMNS = ["dataset", "entry", "policy_stage", "policy_step", "cpu_seconds", "mean", "lower", "upper", "seeds",
                 "final", "last_stage"]


def curve_points(store: ResultsStore, scores: pd.DataFrame) -> pd.DataFrame:
    """Every run's learning-curve points: dataset, entry (with its guidance scale), run, the stage that made the
    policy and its step, the score, the run's training CPU-seconds up to that point, and whether it is the final
    evaluation (each curve's last point). Rows from stores before curve positions were kept place a curve row at
    its stage's step and leave the final evaluation off the curve."""
    ev = store.table("evaluations")
    ev = ev[ev["run_id"].isin(scores["run_id"]) & ~ev["stage"].isin(["selection", START])]
    legacy = ev["policy_stage"].isna() & (ev["stage"] != "final")
    ev = ev.assign(policy_stage=ev["policy_stage"].where(~legacy, ev["stage"]),
                   policy_step=ev["policy_step"].where(~legacy, ev["step"]))
    ev = ev[ev["policy_stage"].notna() & ev["policy_step"].notna()]
    columns = ["dataset", "entry", "run_id", "policy_stage", "policy_step", "score", "cpu_seconds", "final"]
    if ev.empty:
        return pd.DataFrame(columns=columns)
    entry_of = scores.drop_duplicates("run_id").set_index("run_id")
    label = [_variant_label(v, g) for v, g in zip(ev["variant"], ev["guidance_scale"])]
    return pd.DataFrame({"dataset": entry_of.loc[ev["run_id"], "dataset"].to_numpy(),
                         "entry": entry_of.loc[ev["run_id"], "run_entry"].to_numpy() + np.asarray(label, dtype=object),
                         "run_id": ev["run_id"].to_numpy(), "policy_stage": ev["policy_stage"].to_numpy(),
                         "policy_step": ev["policy_step"].astype(int).to_numpy(),
                         "score": ev["score_mean"].to_numpy(dtype=np.float64), "cpu_seconds": ev["cpu_seconds"].to_numpy(),
                         "final": (ev["stage"] == "final").to_numpy()}, columns=columns)


def in_last_stage(points: pd.DataFrame) -> pd.Series:
    """Whether each curve row is of its (dataset, entry)'s last policy stage, the one that made the policy the entry
    reports (its final evaluation's; else the latest trained): DxMI's curve runs through imitation, then fine-tuning,
    and each stage counts its own steps."""
    if points.empty:
        return pd.Series(dtype=bool)
    key = ["dataset", "entry"]
    latest = points.sort_values("cpu_seconds", na_position="first").groupby(key)["policy_stage"].last()
    stage = latest.to_dict() | points[points["final"].astype(bool)].groupby(key)["policy_stage"].first().to_dict()
    return pd.Series([stage[(d, e)] == s for d, e, s in zip(points["dataset"], points["entry"], points["policy_stage"])],
                     index=points.index, dtype=bool)


def _curves(points: pd.DataFrame) -> pd.DataFrame:
    """The learning curves over seeds: per dataset, entry and step of the stage that made the policy, the mean
    score with its 95% interval and the mean training CPU-seconds up to that point."""
    points = points.assign(last_stage=in_last_stage(points))
    rows = []
    for (dataset, entry, stage, step, _), g in points.groupby(["dataset", "entry", "policy_stage", "policy_step", "final"]):
        values = g["score"].to_numpy(dtype=np.float64)
        low, high = _seed_interval(values) if len(values) > 1 and not np.isnan(values).any() else (np.nan, np.nan)
        rows.append({"dataset": dataset, "entry": entry, "policy_stage": stage, "policy_step": int(step),
                     "cpu_seconds": g["cpu_seconds"].mean(), "mean": values.mean(), "lower": low, "upper": high,
                     "seeds": len(values), "final": bool(g["final"].all()), "last_stage": bool(g["last_stage"].all())})
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


FLAT_TOLERANCE = 1.0  # normalised points: a smaller change counts as flat, however close a deterministic policy's seeds


def plateaus(points: pd.DataFrame) -> pd.DataFrame:
    """Whether each curve had flattened by the end of its budget: the change between its last two points (means
    over seeds) within the seeds' spread there (the larger of the two points' ranges over seeds, which holds the
    seeds' differences and the noise of each point's episodes), or under FLAT_TOLERANCE. Both points are on the
    curve's own episodes, at steps every run of the entry evaluated: the final evaluation's episodes are others,
    whose level can differ by the episodes alone. A run made before curves ended at their stage's last step has
    its last curve point a tenth of the budget before it."""
    rows = []
    curve = points[~points["final"].astype(bool) & in_last_stage(points)] if not points.empty else points
    for (dataset, entry), g in curve.groupby(["dataset", "entry"]):
        common = sorted(set.intersection(*(set(r["policy_step"]) for _, r in g.groupby("run_id"))))
        if len(common) < 2:
            continue
        last, before = g[g["policy_step"] == common[-1]]["score"], g[g["policy_step"] == common[-2]]["score"]
        spread = max(float(last.max() - last.min()), float(before.max() - before.min()))
        change = float(last.mean() - before.mean())
        many = len(last) > 1 and len(before) > 1
        rows.append({"dataset": dataset, "entry": entry, "stage": g["policy_stage"].iloc[0],
                     "before_last": float(before.mean()), "last": float(last.mean()), "change": change,
                     "seed_spread": spread if many else np.nan,
                     "flat": bool(abs(change) <= max(spread, FLAT_TOLERANCE)) if many else None,
                     "steps": int(common[-1])})
    return pd.DataFrame(rows)


def short_of_competence(df: pd.DataFrame) -> dict[str, str]:
    """entry -> why its algorithm's preset stops short of the method's competence (`Algorithm.short_of_competence`,
    the reference's own evidence); algorithms no longer registered declare nothing."""
    out: dict[str, str] = {}
    if "preset" not in df:
        return out
    for (algorithm, preset), g in df.groupby(["algorithm", "preset"]):
        try:
            why = registry.get(algorithm).short_of_competence.get(preset)
        except ConfigError:
            continue
        if why:
            out.update({entry: f"{algorithm}[{preset}] is short of competence at this budget: {why}"
                        for entry in g["entry"].unique()})
    return out


def short_cells(df: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(entry, dataset) -> why the entry's preset is short of competence for every algorithm on the dataset's family
    (`policies.competence`): such cells are shown, and no board ranks them."""
    out: dict[tuple[str, str], str] = {}
    if "preset" not in df:
        return out
    for (preset, dataset), g in df.groupby(["preset", "dataset"]):
        why = family_shortfall(preset, dataset)
        if why:
            out.update({(entry, dataset): f"{families.family(dataset)} at the {preset} preset: {why}"
                        for entry in g["entry"].unique()})
    return out


def filling_cells(per_dataset: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(entry, dataset) -> "n of m seeds" where the entry has fewer seeds than the most another entry has there (a
    sweep still filling the cell). Such a cell is shown, and left out of what compares entries until its seeds are
    in: cutting every entry to its fewest seeds would put one seed against three, with a point for an interval."""
    if per_dataset.empty:
        return {}
    most = per_dataset.groupby("dataset")["seeds"].max()
    return {(r.entry, r.dataset): f"{int(r.seeds)} of {int(most[r.dataset])} seeds"
            for r in per_dataset.itertuples() if r.seeds < most[r.dataset]}


def without_cells(scores: pd.DataFrame, cells: dict[tuple[str, str], str]) -> pd.DataFrame:
    """`scores` less the rows of the (entry, dataset) cells named in `cells` (`short_cells`)."""
    return scores[[(e, d) not in cells for e, d in zip(scores["entry"], scores["dataset"])]] if cells else scores


def data_references(runs: pd.DataFrame, datasets: list[str]) -> pd.DataFrame:
    """Per dataset, the data's own score on its evaluation env as its runs recorded it (`OfflineDataset.data_score`):
    the level behaviour cloning should reach, shown as a reference row, never ranked."""
    rows = {}
    if "diagnostics" in runs:
        for r in runs[runs["diagnostics"].notna() & runs["dataset"].isin(datasets)].sort_values("finished").itertuples():
            data = json.loads(r.diagnostics).get("dataset")
            if data:
                rows[r.dataset] = {"dataset": r.dataset, "score": data["data_score"], "how": data["how"]}
    return pd.DataFrame(list(rows.values()), columns=["dataset", "score", "how"])


def _core_minutes(row: pd.Series) -> float:
    """Training CPU-core-minutes: the stages' wall time times the threads the run was given."""
    seconds = sum(json.loads(row["stage_seconds"]).values()) if row["stage_seconds"] else np.nan
    return seconds * run_threads(row["hardware"]) / 60


def _cost(df: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and entry (never averaged over datasets: entries ran on different sets of them): network
    evaluations per action (a guided step adds one energy gradient), speed, training time and core-minutes."""
    guided = df["guidance_scale"].fillna(0) > 0
    df = df.assign(energy_grads=np.where(guided, df["nfe_per_action"], 0.0),
                   train_minutes=df["stage_seconds"].map(lambda s: sum(json.loads(s).values()) / 60 if s else np.nan),
                   core_minutes=df.apply(_core_minutes, axis=1) if len(df) else np.nan)
    return (df.groupby(["dataset", "entry"])
            .agg(nfe_per_action=("nfe_per_action", "median"), energy_grads_per_action=("energy_grads", "median"),
                 actions_per_second=("actions_per_second", "median"), train_minutes=("train_minutes", "median"),
                 core_minutes=("core_minutes", "median"), gradient_steps=("gradient_steps", "median"),
                 score=("score", "mean"))
            .reset_index())


def budgets(df: pd.DataFrame) -> pd.DataFrame:
    """Per run entry: what it trained with, read from its runs' configs: steps per stage, batch sizes, network widths
    (every field named so; one value per field, or each value with its runs when they differ), NFE per action,
    median core-minutes per run, and the code versions that made it."""
    rows = []
    for entry, g in df.drop_duplicates("run_id").groupby("run_entry"):
        fields: dict[str, set[str]] = {}
        for config in g["config"]:
            for k, v in identity_fields(json.loads(config)).items():
                if k.startswith("protocol."):
                    continue
                fields.setdefault(k, set()).add(json.dumps(v))

        def pick(test) -> str:
            return ", ".join(f"{k} {'/'.join(sorted(v))}" for k, v in sorted(fields.items()) if test(k))

        rows.append({"entry": entry, "steps": pick(lambda k: k.endswith("steps") and "." not in k),
                     "batch": pick(lambda k: "batch" in k and "." not in k),
                     "widths": pick(lambda k: any(w in k for w in ("hidden", "widths", "layers")) and "." not in k),
                     "nfe_per_action": float(g["nfe_per_action"].median()),
                     "core_minutes": float(g.apply(_core_minutes, axis=1).median()), "runs": len(g),
                     "code": ", ".join(sorted(set(g["code_version"].dropna())))})
    return pd.DataFrame(rows)


def build(store: ResultsStore, reference_dir: Path | None = None, run_ids: set[str] | None = None) -> Report:
    """Everything the report shows; an empty store gives an empty report, not an error. `run_ids`: only these
    runs (a sweep spec's), leaving out the store's probes and runs that earlier configs made."""
    runs = store.table("runs")
    if run_ids is not None:
        runs = runs[runs["run_id"].isin(run_ids)]
    df, repeated = _run_scores(store, runs)
    if df.empty:
        empty = pd.DataFrame()
        return Report(df, empty, empty, empty, empty, empty, empty, empty)
    per_dataset = _per_dataset(df)
    cells, filling = short_cells(df), filling_cells(per_dataset)
    # cells whose preset is short of competence on their family, and cells whose seeds are still running, are shown
    # per dataset and left out of what compares entries (aggregates, P(X > Y), gains over diffusion BC): a 0 there
    # says nothing of the method, and one seed is no interval
    ranked = without_cells(df, cells | filling)
    aggregates, notes = _aggregates(ranked)
    notes = repeated + entry_footnotes(df) + table_settings_notes(df) + notes
    shown, withheld = _references(load_reference(reference_dir), per_dataset)
    notes += withheld
    generated = sorted(d for d in df["dataset"].unique() if d.startswith("diffbench/"))
    if generated:
        notes.append("generated datasets (" + ", ".join(generated) + ") are made by diffbench, not D4RL or Minari: "
                     "no published number applies to them, so none is shown beside them")
    episodes = sorted(df["episodes"].unique())
    seeds = sorted(per_dataset["seeds"].unique())
    protocol = [
        "score: D4RL-normalised, 100 (R - random) / (expert - random), mean over the final evaluation's episodes"
        + ("; on OGBench the success rate x 100" if any(families.family(d) == "ogbench-manipulation"
                                                       for d in df["dataset"].unique()) else ""),
        "checkpoint: the last (end of training), not the best seen during training",
        f"episodes per evaluation: {', '.join(str(e) for e in episodes)}; seeds per dataset: "
        f"{', '.join(str(s) for s in seeds)}",
        "intervals: 95% percentile bootstrap over seeds (stratified by dataset for aggregates), "
        f"{REPS} replicates",
    ]
    protocol.append("actions/s in the cost table were measured at each run's final evaluation while other runs shared "
                    "the machine: a figure under load, never ranked; `diffbench perf samplers` measures acting speed "
                    "quietly")
    if min(seeds) < 5:
        protocol.append(f"with {min(seeds)} seed(s) an interval over seeds cannot be wider than their range: "
                        "read it as the spread of the seeds, not as a confidence statement")
    transforms = df.groupby("dataset")["reward_transform"].agg(lambda v: ", ".join(sorted(set(v))))
    protocol.append("rewards during training: " + "; ".join(f"{d}: {t}" for d, t in transforms.items())
                    + " (locomotion: x1000/(max - min episode return); antmaze: r - 1; evaluation returns are raw)")
    if (df["selection"] != "none").any():
        protocol.append(f"guidance scale:{SELECTED.replace(' s=', ' ')} rows report the scale each run chose on separate "
                        "selection episodes (other env seeds), scored on the reported episodes; the"
                        f"{BEST_ON_REPORTED.replace(' s=', ' ')} rows pick, per dataset, the scale with the best mean on "
                        "the reported episodes themselves: optimistic, and the protocol of the QGPO paper's per-task "
                        "scale; fixed-scale rows are the per-scale table")
    points = curve_points(store, df)
    curves = _curves(points)
    entry_of = df.drop_duplicates("run_id").set_index("run_id")["run_entry"]
    improvement, parted = _improvement(ranked)
    notes += parted
    notes += stage_agreement(runs)
    notes += unpaired(ranked, runs)
    short = short_of_competence(df)
    notes += sorted({f"not ranked: {why}" for why in short.values()})
    notes += sorted({f"not ranked on {why}" for why in cells.values()})
    if filling:
        notes.append("seeds still running, so left out of the aggregates, P(X > Y) and the gains over diffusion BC "
                     "until they are in: " + "; ".join(f"{e} on {d} ({n})" for (e, d), n in sorted(filling.items())))
    return Report(scores=df, per_dataset=per_dataset, per_domain=_per_domain(per_dataset), aggregates=aggregates,
                  improvement=improvement, curves=curves, plateau=plateaus(points), cost=_cost(df), budget=budgets(df),
                  reference=shown,
                  sharing=shared_stage_savings(runs), protocol=protocol, notes=notes,
                  critic=critic_checks(runs, entry_of), guidance=guidance_checks(runs, entry_of), short=short,
                  short_cells=cells, filling_cells=filling,
                  data_reference=data_references(runs, sorted(per_dataset["dataset"].unique())),
                  gains=gains_over_behaviour(ranked, runs), start_gains=gains_over_start(ranked))


def _references(reference: pd.DataFrame, per_dataset: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Published rows on datasets we ran, each beside our entries evaluated under the same protocol; the rows
    on our datasets that no entry of ours matches are named in notes instead of shown."""
    rows, withheld = [], []
    for _, ref in reference.iterrows():
        ours = per_dataset[per_dataset["dataset"] == matching_dataset(ref["dataset"], set(per_dataset["dataset"]))]
        if ours.empty:
            continue
        same = ours[[same_protocol(ref, "last", e, sel) for e, sel in zip(ours["episodes"], ours["selection"])]]
        if same.empty:
            withheld.append(f"published {ref['algorithm']} on {ref['dataset']} ({ref['score']:g}) is not shown: its "
                            f"protocol (checkpoint {ref['checkpoint']}, {ref['episodes']} episodes, scale selection "
                            f"{ref['scale_selection']}) matches none of our runs there")
            continue
        rows.append(ref.to_dict() | {"ours": "; ".join(f"{e}: {m:.1f}" for e, m in zip(same["entry"], same["mean"]))})
    columns = [*reference.columns, "ours"]
    return pd.DataFrame(rows, columns=columns), withheld


def provenance(df: pd.DataFrame) -> dict[str, Any]:
    """Code versions and hardware the report's runs came from."""
    return {"code_versions": sorted(df["code_version"].dropna().unique().tolist()),
            "hardware": sorted({json.loads(h).get("description", "?") for h in df["hardware"].dropna()})}
