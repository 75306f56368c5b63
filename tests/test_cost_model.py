"""Projecting a run's cost onto a dataset group its algorithm has no run on."""

import pytest

from bench.harness.cost_model import estimate


def test_a_cost_on_an_unseen_group_is_scaled_by_the_groups_ratio_for_other_algorithms():
    # costs that factor as algorithm x group (locomotion 4x the maze): the scaled estimate is exact
    means = {("qgpo", "maze"): 10.0, ("qgpo", "loco"): 40.0, ("bc", "maze"): 1.0, ("bc", "loco"): 4.0,
             ("ddpo", "maze"): 20.0}
    found = estimate(means, "ddpo", "loco")
    assert found.basis == "scaled" and found.seconds == pytest.approx(80.0) and found.linked_by == ("bc", "qgpo")
    assert "scaled by the domains' cost ratio for bc, qgpo" in found.describe(3)
    # the ratios are averaged geometrically: 2x and 8x make 4x
    means[("bc", "loco")] = 2.0 * 1.0
    means[("qgpo", "loco")] = 8.0 * 10.0
    assert estimate(means, "ddpo", "loco").seconds == pytest.approx(80.0)


def test_its_own_runs_win_and_without_a_link_the_plain_mean_is_said_to_be_unscaled():
    means = {("qgpo", "maze"): 10.0, ("qgpo", "loco"): 40.0, ("ddpo", "maze"): 20.0, ("ddpo", "cube"): 60.0}
    assert estimate(means, "qgpo", "loco").basis == "same" and estimate(means, "qgpo", "loco").seconds == 40.0
    unlinked = estimate(means, "ddpo", "puzzle")  # nobody has run on puzzle
    assert unlinked.basis == "other" and unlinked.seconds == pytest.approx(40.0)
    assert "no algorithm with runs on both" in unlinked.describe(2)
    # only the groups a peer links are used: maze (via qgpo), not cube
    assert estimate(means, "ddpo", "loco").seconds == pytest.approx(80.0)
    assert estimate(means, "iql", "loco") is None
