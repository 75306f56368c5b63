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
