"""What guidance and fine-tuning add over diffusion BC, paired on the behaviour model they share.

QGPO at s = 0 samples its behaviour model alone: diffusion behaviour cloning. Every algorithm that restores that
model (its class lists "behaviour" in `shared_stages`: QGPO's guided scales, DDPO, CTRL, DxMI, SRPO) starts, seed by
seed, from the very same weights, so what it adds is read seed by seed against that seed's s = 0: the mean of the
per-seed differences with its 95% t-interval, "better" or "worse" when the interval excludes zero, "tie" when it
covers it. A pair is made only on the same dataset content, preset and seed; where both runs recorded the behaviour
weights' digest (`diagnostics.weights`), only when the digests agree, so a pair never joins two different models.
Where a seed's two models differ (the shared stage trained again on another CPU after its checkpoint was gone:
the same config gives other weights), the cell is compared unpaired instead: the difference of the seeds' means
with Welch's t-interval, wider than a paired one, and said so in its `pairing` column.
The scale chosen on the reported episodes is left out: it was picked with the target in hand.

A fine-tuner also carries its own reference: its start (the chain its fine-tuning began from, `Algorithm.start`),
evaluated on the very episodes of its final evaluation. `gains_over_start` pairs the two within each run, so what
fine-tuning added is read whatever machine made the shared stages, and apart from what the fine-tuner's own chain
costs against QGPO's DPM-Solver sampling of the same model.
"""

from __future__ import annotations

import json

import pandas as pd

from bench.studies.paired import paired, verdict, welch
from policies import registry
from policies.errors import ConfigError

BASE = "qgpo"
STAGE = "behaviour"
COLUMNS = ["dataset", "entry", "against", "pairs", "pairing", "diffusion BC", "gain [95% CI]", "verdict", "mean", "low",
           "high"]
PAIRED, UNPAIRED = "paired", "unpaired (Welch)"
START_COLUMNS = ["dataset", "entry", "seeds", "start", "gain [95% CI]", "verdict", "mean", "low", "high"]


def _shares_behaviour(algorithm: str) -> bool:
    try:
        return STAGE in getattr(registry.get(algorithm), "shared_stages", ())
    except ConfigError:  # an algorithm no longer registered: its rows pair with nothing
        return False


def _digests(runs: pd.DataFrame) -> dict[str, str]:
    """run_id -> the digest of its behaviour model's weights, where the run recorded it."""
    out = {}
    for run_id, diag in zip(runs["run_id"], runs["diagnostics"] if "diagnostics" in runs else []):
        weights = (json.loads(diag) if isinstance(diag, str) and diag else {}).get("weights") or {}
        if STAGE in weights and weights[STAGE].get("digest"):
            out[run_id] = weights[STAGE]["digest"]
    return out


def _pairs(scores: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Each score row built on QGPO's behaviour model beside its seed's s = 0 row, with `same`: whether the two
    behaviour models are one (their digests agree, or one of them recorded none)."""
    digest = _digests(runs)
    base = scores[(scores["algorithm"] == BASE) & (scores["guidance_scale"] == 0) & (scores["selection"] == "none")]
    key = ["dataset", "preset", "seed"]
    base = base.assign(base_digest=base["run_id"].map(digest), base_score=base["score"], base_entry=base["entry"])
    built = scores[scores["algorithm"].map(_shares_behaviour) & (scores["selection"] != "reported-episodes")
                   & ~scores.index.isin(base.index)]
    pairs = built.merge(base[key + ["base_digest", "base_score", "base_entry", "run_id"]].rename(
        columns={"run_id": "base_run"}), on=key)
    mine = pairs["run_id"].map(digest)
    return pairs.assign(same=mine.isna() | pairs["base_digest"].isna() | (mine == pairs["base_digest"]))


def unpaired(scores: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """A line naming the cells whose seeds found a QGPO run but another behaviour model there (the shared stage
    trained again, e.g. on another kind of CPU after its checkpoint was gone): left out of the gains, never joined."""
    if scores.empty:
        return []
    apart = _pairs(scores, runs).drop_duplicates(["dataset", "entry", "seed"])
    apart = apart[~apart["same"]]
    if apart.empty:
        return []
    cells = [f"{entry} on {dataset} (seed{'s' * (len(g) > 1)} {', '.join(str(s) for s in sorted(g['seed']))})"
             for (dataset, entry), g in apart.groupby(["dataset", "entry"])]
    return ["compared with diffusion BC unpaired (Welch's interval over the seeds), their behaviour model another "
            "than QGPO's of the same seed (the shared stage trained again, its checkpoint gone; on another CPU the same "
            "config gives other weights): " + "; ".join(cells)]


def gains_over_behaviour(scores: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and entry built on QGPO's behaviour model: its paired gain over diffusion BC (`scores`: the
    report's per-seed score rows; `runs`: the store's runs table, for the weights' digests)."""
    if scores.empty:
        return pd.DataFrame(columns=COLUMNS)
    pairs = _pairs(scores, runs)
    rows = []
    for (dataset, entry, base_entry), g in pairs.groupby(["dataset", "entry", "base_entry"], sort=True):
        g = g.drop_duplicates(["seed"])  # one base per seed; a second QGPO config on the same seed would pair twice
        together = bool(g["same"].all())
        diff = paired(g, g, "score", col_b="base_score") if together else welch(g["score"], g["base_score"])
        rows.append({"dataset": dataset, "entry": entry, "against": base_entry, "pairs": diff.seeds,
                     "pairing": PAIRED if together else UNPAIRED,
                     "diffusion BC": f"{g['base_score'].mean():.1f}", "gain [95% CI]": diff.text(1),
                     "verdict": verdict(diff), "mean": diff.mean, "low": diff.low, "high": diff.high})
    return pd.DataFrame(rows, columns=COLUMNS)


def gains_over_start(scores: pd.DataFrame) -> pd.DataFrame:
    """Per dataset and entry whose runs evaluated their start (`start_score`): the trained policy against that start,
    paired seed by seed (the same run, the same episodes). Runs made before the harness evaluated starts have none
    and are left out (`diffbench results starts` adds theirs where their checkpoints are kept); a cell with one such
    seed has a gain and no interval."""
    if scores.empty or "start_score" not in scores:
        return pd.DataFrame(columns=START_COLUMNS)
    rows = []
    own = scores[(scores["selection"] == "none") & scores["start_score"].notna()]
    for (dataset, entry), g in own.groupby(["dataset", "entry"], sort=True):
        g = g.drop_duplicates(["seed"])
        diff = paired(g, g, "score", col_b="start_score")
        rows.append({"dataset": dataset, "entry": entry, "seeds": diff.seeds, "start": f"{g['start_score'].mean():.1f}",
                     "gain [95% CI]": diff.text(1), "verdict": verdict(diff), "mean": diff.mean, "low": diff.low,
                     "high": diff.high})
    return pd.DataFrame(rows, columns=START_COLUMNS)
