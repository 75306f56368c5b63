"""The quick benchmark's comparison table, on scores whose means are known."""

import pandas as pd
import pytest

from bench.studies.quick import comparison, format_table
from bench.harness.store import ResultsStore, RunResult


def run(run_id: str, seed: int, scores: dict[float | None, list[float]], algorithm: str = "qgpo",
        selected: float | None = None) -> RunResult:
    final = [{"variant": "default" if s is None else f"guidance_scale={s:g}", "guidance_scale": s, "episode": i,
              "return": v, "length": 300, "score": v} for s, values in scores.items() for i, v in enumerate(values)]
    return RunResult(run_id=run_id, algorithm=algorithm, dataset="d", seed=seed, preset="quick", config={},
                     started=0.0, finished=60.0, gradient_steps=12_000, nfe_per_action=15 if algorithm == "qgpo" else 4,
                     selected_guidance_scale=selected, final=final)


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
    assert "| qgpo s = 0 (diffusion BC) | 15 | 20.0 | 40.0 | 30.0 ± 14.1 |  |" in text
    assert "| qgpo s = 3 | 15 | 60.0 | 46.0 | 53.0 ± 9.9 | +23.0 |" in text


def test_fine_tuning_methods_and_the_held_out_choice_sit_beside_qgpo(tmp_path):
    store = ResultsStore(tmp_path)
    store.record(run("a", 0, {0.0: [10, 30], 1.0: [25], 3.0: [50, 70]}, selected=1.0))  # chose 1 on held-out episodes
    store.record(run("b", 1, {0.0: [40, 40], 1.0: [41], 3.0: [44, 46, 48]}, selected=3.0))
    store.record(run("c", 0, {None: [30, 34]}, algorithm="dxmi"))
    store.record(run("d", 1, {None: [50]}, algorithm="dxmi"))
    table = comparison(store, ["a", "b", "c", "d"])
    assert table["method"].tolist() == ["qgpo s = 0 (diffusion BC)", "qgpo s = 1", "qgpo s = 3",
                                        "qgpo, scale chosen on held-out episodes", "dxmi (few-step sampler tilted by Q_0)"]
    rows = table.set_index("method")
    chosen = rows.loc["qgpo, scale chosen on held-out episodes"]
    assert [chosen["seed 0"], chosen["seed 1"]] == [25, 46]  # each seed's chosen scale, scored on the final episodes
    dxmi = rows.loc["dxmi (few-step sampler tilted by Q_0)"]
    assert [dxmi["seed 0"], dxmi["seed 1"], dxmi["gain_vs_s0"], dxmi["nfe_per_action"]] == [32, 50, 11, 4]
    assert "| dxmi (few-step sampler tilted by Q_0) | 4 | 32.0 | 50.0 | 41.0 ± 12.7 | +11.0 |" in format_table(table)


def test_nothing_finished_is_an_empty_table(tmp_path):
    assert comparison(ResultsStore(tmp_path), ["missing"]).empty
