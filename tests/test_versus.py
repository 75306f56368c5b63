"""`diffbench compare --spec`: a sweep's algorithms against a baseline by paired per-seed intervals, read from the
spec's own runs only, the guided baseline at its held-out choice."""

import json

import numpy as np
import pandas as pd
import pytest

from bench.harness.sweep import SweepSpec
from bench.reports.versus import spec_scores, versus
from bench.studies.exactness import T_95
from policies import registry
from policies.errors import ConfigError

DATASET = "diffbench/pointmaze/umaze-dense-small-v0"
SPEC = SweepSpec(algorithms=("qgpo", "srpo"), datasets=(DATASET,), seeds=(0, 1, 2), preset="cpu")


def _row(run, variant_score, selection="none", entry=None, **extra):
    return {"run_id": run.run_id(), "algorithm": run.algorithm, "dataset": run.dataset, "seed": run.seed,
            "preset": run.preset, "selection": selection, "entry": entry or f"{run.algorithm}[cpu]", "run_entry": f"{run.algorithm}[cpu]",
            "score": variant_score,
            "nfe_per_action": 15.0 if run.algorithm == "qgpo" else 1.0,
            "stage_seconds": json.dumps({"train": 600.0}), "hardware": json.dumps({"torch_threads": 1})} | extra


def _scores(srpo_gain):
    """qgpo at s = 0 and s = 1 (its held-out choice s = 1) and srpo, each seed's; and a run outside the spec."""
    rows = []
    base = {0: 50.0, 1: 60.0, 2: 40.0}
    for run in SPEC.runs():
        if run.algorithm == "qgpo":
            rows += [_row(run, base[run.seed] - 30, entry="qgpo[cpu] s=0"), _row(run, base[run.seed], entry="qgpo[cpu] s=1"),
                     _row(run, base[run.seed], "held-out", "qgpo[cpu] s=held-out choice")]
        else:
            rows.append(_row(run, base[run.seed] + srpo_gain[run.seed]))
    stray = SweepSpec(algorithms=("srpo",), datasets=(DATASET,), seeds=(0,), preset="tiny").runs()[0]
    rows.append(_row(stray, 1000.0))  # another preset's run in the same store
    return pd.DataFrame(rows)


def _versus(scores, spec, baseline, **kw):
    """`versus` on the spec's own rows, as `versus.table` reads them from a store."""
    return versus(spec_scores(scores, spec), spec, baseline, **kw)


def test_each_algorithm_is_paired_with_the_baselines_held_out_choice_seed_by_seed():
    gain = {0: 5.0, 1: 6.0, 2: 7.0}
    table, notes = _versus(_scores(gain), SPEC, "qgpo")
    srpo = table.set_index("algorithm").loc["srpo"]
    d = np.array(list(gain.values()))
    half = T_95[3] * d.std(ddof=1) / np.sqrt(3)
    assert srpo["− qgpo, paired [95% CI]"] == f"{d.mean():+.1f} [{d.mean() - half:+.1f}, {d.mean() + half:+.1f}]"
    assert srpo["verdict"] == "better" and srpo["seeds"] == 3 and srpo["score"] == "56.0 ± 9.5"
    assert table.set_index("algorithm").loc["qgpo", "entry"] == "qgpo[cpu] s=held-out choice"
    assert not notes


def test_an_interval_that_covers_zero_is_a_tie_whatever_the_means():
    table, _ = _versus(_scores({0: 12.0, 1: -3.0, 2: 2.0}), SPEC, "qgpo")  # mean +3.7
    assert table.set_index("algorithm").loc["srpo", "verdict"] == "tie"
    table, _ = _versus(_scores({0: -5.0, 1: -6.0, 2: -4.0}), SPEC, "qgpo")
    assert table.set_index("algorithm").loc["srpo", "verdict"] == "worse"


def test_missing_seeds_are_named_and_the_baseline_must_be_in_the_spec():
    scores = _scores({0: 5.0, 1: 6.0, 2: 7.0})
    scores = scores[~((scores["algorithm"] == "srpo") & (scores["seed"] == 2))]
    table, notes = _versus(scores, SPEC, "qgpo")
    assert table.set_index("algorithm").loc["srpo", "seeds"] == 2
    assert notes == [f"srpo on {DATASET}: seeds 2 not finished"]
    with pytest.raises(ConfigError, match="not among the spec's algorithms"):
        _versus(scores, SPEC, "iql")


def test_each_row_shows_its_curve_and_a_guided_one_each_scales():
    plateau = pd.DataFrame([
        {"dataset": DATASET, "entry": "srpo[cpu]", "before_last": 50.0, "last": 56.0, "flat": False},
        {"dataset": DATASET, "entry": "qgpo[cpu] s=0", "before_last": 19.0, "last": 20.0, "flat": True},
        {"dataset": DATASET, "entry": "qgpo[cpu] s=1", "before_last": 49.0, "last": 50.0, "flat": None},
        {"dataset": "elsewhere", "entry": "srpo[cpu]", "before_last": 0.0, "last": 0.0, "flat": True}])
    table, _ = _versus(_scores({0: 5.0, 1: 6.0, 2: 7.0}), SPEC, "qgpo", plateau=plateau)
    curve = table.set_index("algorithm")["curve (last two points), flat"]
    assert curve["srpo"] == "50.0 → 56.0, no"
    assert curve["qgpo"] == "s=0: 19.0 → 20.0, yes; s=1: 49.0 → 50.0, ?"


def test_a_row_of_a_preset_short_of_competence_is_marked(monkeypatch):
    monkeypatch.setattr(registry.get("srpo"), "short_of_competence", {"cpu": "later"})
    table, _ = _versus(_scores({0: 5.0, 1: 6.0, 2: 7.0}), SPEC, "qgpo")
    assert table.set_index("algorithm")["verdict"].to_dict() == {"srpo": "better †", "qgpo": "baseline"}
