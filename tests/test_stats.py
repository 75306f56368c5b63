"""The aggregate statistics against values worked out by hand, and the bootstrap against theory."""

import numpy as np
import pytest

from bench.reports import stats

# 4 runs x 3 tasks
S = np.array([[1.0, 5.0, 40.0],
              [2.0, 6.0, 50.0],
              [3.0, 7.0, 60.0],
              [100.0, 8.0, 130.0]])


def test_iqm_is_the_mean_of_the_middle_half_of_all_runs():
    # 12 values sorted: 1 2 3 5 6 7 8 40 50 60 100 130; cut 3 from each end -> 5 6 7 8 40 50
    assert stats.iqm(S) == pytest.approx((5 + 6 + 7 + 8 + 40 + 50) / 6)


def test_mean_median_and_optimality_gap_by_hand():
    task_means = [26.5, 6.5, 70.0]
    assert stats.mean(S) == pytest.approx(np.mean(task_means))
    assert stats.median(S) == pytest.approx(26.5)
    # min(S, 100) sums to 1+2+3+100 + 26 + 40+50+60+100 = 382 over 12 runs
    assert stats.optimality_gap(S) == pytest.approx(100 - 382 / 12)
    assert stats.optimality_gap(S, gamma=10) == pytest.approx(10 - (1 + 2 + 3 + 10 + 5 + 6 + 7 + 8 + 40) / 12)


def test_probability_of_improvement_counts_pairs_per_task_ties_half():
    x = np.array([[1.0, 4.0], [3.0, 4.0]])
    y = np.array([[2.0, 4.0], [2.0, 1.0]])
    # task 0: (1>2 no, 1>2 no, 3>2, 3>2) = 1/2; task 1: 4 vs 4 tie twice, 4 > 1 twice = (1 + 0.5*... ) -> 0.75
    assert stats.probability_of_improvement(x, y) == pytest.approx((0.5 + 0.75) / 2)
    assert stats.probability_of_improvement(x, x) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same tasks"):
        stats.probability_of_improvement(x, y[:, :1])


def test_performance_profile_weights_tasks_equally():
    s = np.array([[10.0, 50.0], [30.0, 70.0]])
    assert stats.performance_profile(s, [0, 20, 60, 80]).tolist() == [1.0, 0.75, 0.25, 0.0]


def test_stratified_resampling_never_mixes_tasks():
    rng = np.random.default_rng(0)
    for _ in range(50):
        r = stats.stratified_resample(S, rng)
        assert all(set(r[:, j]) <= set(S[:, j]) for j in range(S.shape[1]))


def test_bootstrap_interval_of_a_mean_matches_the_normal_theory():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 1))
    point, low, high = stats.bootstrap_interval(stats.mean, x, reps=4000, seed=2)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert point == pytest.approx(x.mean())
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert low < point < high


def test_one_run_per_task_has_no_spread_and_bad_input_is_refused():
    one = S[:1]
    assert stats.bootstrap_interval(stats.iqm, one) == (stats.iqm(one),) * 3
    with pytest.raises(ValueError, match="NaN or inf"):
        stats.bootstrap_interval(stats.mean, np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match=r"\(runs, tasks\) matrix"):
        stats.bootstrap_interval(stats.mean, np.array([1.0, 2.0]))


def test_interval_helpers_bracket_their_point_estimates():
    rng = np.random.default_rng(3)
    a, b = rng.normal(60, 10, size=(5, 4)), rng.normal(40, 10, size=(5, 4))
    out = stats.aggregate_intervals({"a": a}, reps=300)
    for name, (point, low, high) in out["a"].items():
        assert low <= point <= high, name
    point, low, high = stats.probability_of_improvement_interval(a, b, reps=300)
    assert 0.5 < low <= point <= high <= 1.0
    profile, lower, upper = stats.performance_profile_band(a, [40, 60, 80], reps=300)
    assert (lower <= profile).all() and (profile <= upper).all()


def test_a_stack_of_replicates_gives_each_replicate_its_own_statistic():
    rng = np.random.default_rng(4)
    stack, other = rng.normal(50, 20, size=(7, 5, 3)), rng.normal(50, 20, size=(7, 4, 3))
    for fn in (stats.iqm, stats.mean, stats.median, stats.optimality_gap):
        assert np.allclose(fn(stack), [fn(m) for m in stack]), fn.__name__
    assert np.allclose(stats.probability_of_improvement(stack, other),
                       [stats.probability_of_improvement(a, b) for a, b in zip(stack, other)])
    assert np.allclose(stats.performance_profile(stack, [30, 50]), [stats.performance_profile(m, [30, 50]) for m in stack])


# ---------------------------------------------------------------- paired per-seed verdicts of the toy studies

def test_paired_differences_and_ratios_decide_a_cell_by_their_interval():
    import math

    import pandas as pd

    from bench.studies.paired import closer, paired, tally, within

    a = pd.DataFrame({"seed": [0, 1, 2, 3], "swd": [1.0, 2.0, 3.0, 9.0]})
    b = pd.DataFrame({"seed": [0, 1, 2], "swd": [2.0, 4.0, 6.0]})  # seed 3 is not shared: left out
    d = paired(a, b, "swd")
    half = 4.303 * 1.0 / math.sqrt(3)  # differences -1, -2, -3: std 1, t(0.975, 2)
    assert d.seeds == 3 and d.mean == pytest.approx(-2.0) and d.high == pytest.approx(-2.0 + half)
    assert closer(d) == "tie"  # -2 + 2.48 > 0: three seeds cannot exclude zero here
    r = paired(a, b, "swd", ratio=True)  # every ratio 0.5: a zero-width interval
    assert r.mean == pytest.approx(0.5) and r.low == pytest.approx(0.5) and within(r, 0.6) == "yes"
    assert within(r, 0.4) == "no" and within(r, 0.5) == "yes"
    tight = paired(pd.DataFrame({"seed": range(5), "swd": [1.0, 1.1, 0.9, 1.0, 1.05]}),
                   pd.DataFrame({"seed": range(5), "swd": [2.0, 2.0, 2.0, 2.1, 2.0]}), "swd")
    assert closer(tight) == "a" and closer(paired(b, a, "swd")) == "tie"
    assert closer(paired(a.head(1), b.head(1), "swd")) is None  # one seed: no interval, no verdict
    assert tally(["a", "tie", None, "a"], {"a": "wins", "b": "losses", "tie": "ties"}) == "2 wins, 0 losses, 1 ties"
