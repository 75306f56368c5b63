"""CEP's claim on the toy bandits, at a test budget: guidance by CEP lands near the exact target
pi ∝ mu exp(beta Q); guidance by MSE energy regression does not (full table: results/exactness.md)."""

import pytest

from bench.studies.exactness import BUDGETS, run_task
from envs.toy import TASKS, noise_floor

BETA = 10.0


@pytest.mark.parametrize("task", ["8gaussians", "moons"])
def test_cep_beats_mse_and_removes_most_of_the_distance_to_the_target(task):
    rows = {r["method"]: r for r in run_task(task, [BETA], seed=0, budget=BUDGETS["test"])}
    # what ignoring guidance scores: behaviour samples against exact target samples
    unguided = noise_floor(TASKS[task], BETA, n=BUDGETS["test"].n_eval, repeats=1, seed=0,
                           mmd=False)["swd_behaviour_mean"]
    cep, mse = rows["cep"]["swd_mu"], rows["mse"]["swd_mu"]
    assert cep < mse, (cep, mse)
    # stated bound: CEP removes at least half of the behaviour's distance to the target
    assert cep < 0.5 * unguided, (cep, unguided)
    # against the tilt of the model it guides, CEP is closer still than MSE
    assert rows["cep"]["swd_theta"] < rows["mse"]["swd_theta"]
    assert rows["cep"]["theta_target_n"] == BUDGETS["test"].n_eval and 0 <= rows["cep"]["outside"] <= 1
