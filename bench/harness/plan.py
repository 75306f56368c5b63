"""What a sweep would do against a results store, before it does it: which runs are finished there (and are
skipped), and for each run that is not, the stored run of the same algorithm, dataset and seed it comes closest
to and the settings that part them. A newcomer reproducing a committed row learns here why an id does not match
(another preset's steps, another dataset content) instead of retraining for hours to find out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bench.harness.runner import CURVE_DEFAULTS, RunSpec
from envs import catalog
from policies import config as cfg_tools


@dataclass
class Planned:
    spec: RunSpec
    run_id: str
    status: str  # "finished" (skipped), "new", or "differs" (a stored run of the same algorithm/dataset/seed)
    closest: str | None = None  # that stored run's id
    differences: tuple[str, ...] = ()  # "q_steps 10000 -> 40000", "dataset content a1b2 -> c3d4"


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    return {prefix[:-1]: value}


def identity_fields(config: dict[str, Any]) -> dict[str, Any]:
    """A run's recorded config as dotted keys, without what its identity leaves out (seed aside)."""
    flat = _flat({k: v for k, v in config.items() if k not in ("device", "seed")})
    return {k: v for k, v in flat.items() if k.removeprefix("protocol.") not in CURVE_DEFAULTS}


def wanted_config(spec: RunSpec, config: Any = None) -> dict[str, Any]:
    """The config a run of `spec` records (its preset and protocol with it), to hold stored runs' configs to;
    `config`: `spec.config()` where the caller made it already."""
    made = spec.config() if config is None else config
    return {**cfg_tools.to_dict(made), "preset": spec.preset, "protocol": spec.protocol()}


def identity_key(config: dict[str, Any]) -> str:
    """`identity_fields` as one comparable string: two configs with the same key differ in seed or device alone."""
    return json.dumps(identity_fields(config), sort_keys=True, default=str)


def differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    a, b = identity_fields(stored), identity_fields(wanted)
    return [f"{k} {json.dumps(a.get(k))} -> {json.dumps(b.get(k))}" for k in sorted(set(a) | set(b))
            if json.dumps(a.get(k), sort_keys=True) != json.dumps(b.get(k), sort_keys=True)]


def read_contents(runs: pd.DataFrame, datasets: list[str]) -> dict[str, str]:
    """Per dataset, the content a report reads a store's runs at: this machine's copy where the store holds runs
    on it, else the content most of the store's runs on the dataset recorded (on a tie, the one whose latest run
    finished last: a recipe made again is read at its new bytes). A store made on another machine (a locomotion
    dataset made on an AMD CPU differs from an Intel one's) or read without the data on disk is read as it is; a
    sweep, which trains on the local copy, always hashes the local content."""
    columns = ["dataset", "dataset_content", "finished"]
    recorded = runs[runs["status"] == "finished"].dropna(subset=["dataset_content"]) \
        if not runs.empty and "dataset_content" in runs else pd.DataFrame(columns=columns)
    out = {}
    for dataset in dict.fromkeys(datasets):
        local, held = catalog.fingerprint(dataset), recorded[recorded["dataset"] == dataset]
        if held.empty or local in set(held["dataset_content"]):
            out[dataset] = local
            continue
        tally = held.groupby("dataset_content")["finished"].agg(["size", "max"])
        out[dataset] = str(tally.sort_values(["size", "max"], ascending=False).index[0])
    return out


def apart(specs: list[RunSpec], runs: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """The spec's datasets whose every finished run in the store was trained on other bytes than this machine's
    copy: dataset -> (the local content, the store's)."""
    local = {d: catalog.fingerprint(d) for d in dict.fromkeys(s.dataset for s in specs)}
    return {d: (local[d], c) for d, c in read_contents(runs, list(local)).items() if c != local[d]}


def other_data(specs: list[RunSpec], runs: pd.DataFrame) -> str:
    """What a sweep here would start again on other data ("" where nothing). Made here, those cells would stand
    beside the store's as a second dataset, kept apart in the reports."""
    forked = apart(specs, runs)
    if not forked:
        return ""
    return (f"this machine's copies of {len(forked)} dataset(s) hold other bytes than the store's runs on them were "
            "trained on: " + ", ".join(f"{d} (here {mine}, the store's {c})" for d, (mine, c) in forked.items())
            + "; a sweep here would make their cells again on other data. Make them where the copies match "
            "(`diffbench datasets verify ID --against RESULTS` says what differs) or leave these datasets out of "
            "this call (`--other-data skip`)")


def read_ids(specs: list[RunSpec], runs: pd.DataFrame) -> list[str]:
    """The specs' run ids at the contents `read_contents` chooses: the runs a report of the store reads."""
    contents = read_contents(runs, [s.dataset for s in specs])
    return [s.run_id(contents[s.dataset]) for s in specs]


def plan(specs: list[RunSpec], runs: pd.DataFrame) -> list[Planned]:
    """Each spec against the store's runs table."""
    finished = runs[runs["status"] == "finished"] if not runs.empty else runs
    ids = set(finished["run_id"]) if not finished.empty else set()
    out = []
    for spec in specs:
        run_id = spec.run_id()
        if run_id in ids:
            out.append(Planned(spec, run_id, "finished"))
            continue
        same = finished[(finished["algorithm"] == spec.algorithm) & (finished["dataset"] == spec.dataset)
                        & (finished["seed"] == spec.seed)] if not finished.empty else finished
        if same.empty:
            out.append(Planned(spec, run_id, "new"))
            continue
        wanted = wanted_config(spec)
        content = catalog.fingerprint(spec.dataset)
        best: tuple[int, str, list[str]] | None = None
        for row in same.itertuples():
            diff = differences(json.loads(row.config), wanted)
            recorded = getattr(row, "dataset_content", None)
            if isinstance(recorded, str) and recorded != content:
                diff.append(f"dataset content {recorded} -> {content} (this copy; `diffbench datasets verify "
                            f"{spec.dataset} --against RESULTS`)")
            elif not isinstance(recorded, str):
                diff.append("an id from an older diffbench: that run recorded no dataset content, and its id hashed "
                            "what ids no longer hold (its curve settings) or no longer spell the same way, so it "
                            "cannot be matched to this copy's bytes")
            if best is None or len(diff) < best[0]:
                best = (len(diff), row.run_id, diff)
        out.append(Planned(spec, run_id, "differs", best[1], tuple(best[2])))
    return out


def describe(planned: list[Planned]) -> list[str]:
    """The plan as lines: a count of each status, then each run that will train although the store holds a run of
    the same algorithm, dataset and seed, with what differs."""
    counts = pd.Series([p.status for p in planned]).value_counts()
    lines = [f"{counts.get('finished', 0)} finished in the store (skipped), {counts.get('new', 0)} new, "
             f"{counts.get('differs', 0)} differing from a stored run of the same algorithm, dataset and seed"]
    for p in planned:
        if p.status == "differs":
            lines.append(f"  {p.spec.label()} -> {p.run_id}; closest stored run {p.closest} differs in: "
                         + "; ".join(p.differences))
    return lines
