"""Where a preset's budget is known to stop short of competence for every algorithm on a dataset family.

An algorithm's own `short_of_competence` says its preset is short everywhere (DAC's cpu preset, from its reference
curves). Some shortfalls belong to a family instead: its rewards or horizon need more steps than a preset gives any
method. Runs there are still made and shown, ranked nowhere (a board of untrained methods ranks nothing), and a
sweep makes them after every run the boards rank. Each entry names its evidence, our own runs' where we have them.
"""

from __future__ import annotations

from envs.families import family

FAMILY_SHORTFALLS: dict[tuple[str, str], str] = {
    ("cpu", "ogbench-manipulation"): (
        "the cpu preset's 10k-40k steps per stage leave the methods that learn a critic at OGBench's starting line, and "
        "BC, the one without, ranks nothing alone. The rewards are -1 a step until the task is solved, so a critic's values must fall to about -97 (the data's discounted returns); "
        "IQL's Q_0 on the data stands at -37 after its 10k critic steps and succeeds in 0 of 100 cube-single episodes, "
        "and at ten times the budget (100k + 100k steps) its Q_0 reaches -89 and it succeeds in 15 (one seed; "
        "results/ogbench_budgets.md; OGBench's own offline RL baselines train 1M steps on 1M transitions). OGBench's "
        "plan oracle, given the task's goal, succeeds in every episode of our evaluation (tests/test_ogbench.py), so "
        "the 0s are the budget's, not the env's. A competent budget there is the paper preset, on a GPU"),
}


def family_shortfall(preset: str, dataset: str) -> str | None:
    """Why `preset` is short of competence for every algorithm on `dataset`'s family, or None."""
    return FAMILY_SHORTFALLS.get((preset, family(dataset)))
