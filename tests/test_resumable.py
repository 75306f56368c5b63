"""A toy study's saved rows are reused only by an invocation with the same budget: its name and its values."""

from dataclasses import dataclass

from bench.harness.provenance import budget_label
from bench.studies.resumable import run_resumable


@dataclass(frozen=True)
class Budget:
    steps: int = 10


calls: list[tuple] = []


def job(task: str, seed: int, budget: Budget) -> list[dict]:
    calls.append((task, seed, budget.steps))
    return [{"task": task, "seed": seed, "value": seed * budget.steps}]


def test_saved_rows_are_reused_under_the_same_budget_values_only(tmp_path):
    out, key = tmp_path / "study.md", (lambda j: (j[0], j[1]))
    run = lambda budget: run_resumable(job, [("t", s, budget) for s in (0, 1)], key, out,  # noqa: E731
                                       budget_label("default", budget), 1, lambda g: g)
    calls.clear()
    rows, reused = run(Budget())
    assert reused == 0 and len(calls) == 2 and sorted(r["value"] for r in rows) == [0, 10]
    rows, reused = run(Budget())
    assert reused == 2 and len(calls) == 2 and sorted(r["value"] for r in rows) == [0, 10]
    rows, reused = run(Budget(steps=20))  # the same name, edited values: made again
    assert reused == 0 and len(calls) == 4 and sorted(r["value"] for r in rows) == [0, 20]
    assert budget_label("default", Budget()) != budget_label("default", Budget(steps=20))


def test_rows_of_several_runs_take_each_job_from_the_first_run_that_made_it(tmp_path):
    import pandas as pd

    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    pd.DataFrame([{"task": "t", "seed": 0, "value": 1, "code": "a"}]).to_csv(first, index=False)
    pd.DataFrame([{"task": "t", "seed": 0, "value": 2, "code": "b"}, {"task": "t", "seed": 1, "value": 3, "code": "b"},
                  {"task": "t", "seed": 1, "value": 4, "code": "b"}]).to_csv(second, index=False)
    calls.clear()
    rows, _ = run_resumable(job, [("t", s, Budget()) for s in (0, 1)], lambda j: (j[0], j[1]), tmp_path / "s.md",
                            "default", 1, lambda g: g, from_rows=[first, second])
    assert not calls  # nothing ran
    assert sorted((r["seed"], r["value"]) for r in rows) == [(0, 1), (1, 3), (1, 4)]  # seed 0 not mixed across runs
