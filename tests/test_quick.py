"""The quick benchmark's comparison table, on scores whose means are known."""

import pandas as pd
import pytest

from bench.studies.quick import comparison, format_table
from bench.harness.store import ResultsStore, RunResult


def run(run_id: str, seed: int, scores: dict[float, list[float]]) -> RunResult:
    final = [{"variant": f"guidance_scale={s:g}", "guidance_scale": s, "episode": i, "return": v, "length": 300,
              "score": v} for s, values in scores.items() for i, v in enumerate(values)]
    return RunResult(run_id=run_id, algorithm="qgpo", dataset="d", seed=seed, preset="quick", config={},
                     started=0.0, finished=60.0, gradient_steps=12_000, nfe_per_action=15, final=final)


def test_seeds_are_averaged_first_and_the_gain_is_over_s0(tmp_path):
    store = ResultsStore(tmp_path)
    store.record(run("a", 0, {0.0: [10, 30], 3.0: [50, 70]}))  # seed means 20 and 60
    store.record(run("b", 1, {0.0: [40, 40], 3.0: [44, 46, 48]}))  # 40 and 46 (unequal episode counts)
    store.record(run("other", 2, {0.0: [1000]}))  # not asked for
    table = comparison(store, ["a", "b"]).set_index("guidance_scale")
    assert table.loc[0.0, ["seed 0", "seed 1", "mean"]].tolist() == [20, 40, 30]
    assert table.loc[3.0, ["seed 0", "seed 1", "mean"]].tolist() == [60, 46, 53]
    assert table.loc[3.0, "std_over_seeds"] == pytest.approx(pd.Series([60, 46]).std())  # n - 1
    assert table.loc[3.0, "gain_vs_s0"] == 23 and table.loc[0.0, "gain_vs_s0"] == 0
    assert table.loc[3.0, "every_seed_above_s0"] and table.loc[3.0, "episodes_per_seed"] == 2
    text = format_table(table.reset_index())
    assert "| 0 (diffusion BC) | 20.0 | 40.0 | 30.0 ± 14.1 |  |" in text
    assert "| 3 | 60.0 | 46.0 | 53.0 ± 9.9 | +23.0 |" in text


def test_nothing_finished_is_an_empty_table(tmp_path):
    assert comparison(ResultsStore(tmp_path), ["missing"]).empty
