"""Every registered algorithm, plug-ins included (a package registering through the `diffbench.algorithms`
entry point group is collected here too), keeps the contract in `contract.py`."""

import pytest

from policies import registry

from . import contract
from .checks import with_terminals

ALGORITHMS = registry.available()


@pytest.fixture(scope="module")
def ended(umaze):
    """The tiny maze with terminals beside its time limits: every algorithm's stages see both."""
    data = with_terminals(umaze)
    t = data.transitions
    assert t.terminals.sum() > 0 and t.timeouts.sum() > 0 and not (t.terminals * t.timeouts).any()
    return data


@pytest.fixture(scope="module")
def runs(ended, tmp_path_factory):
    out = {}

    def run(name: str) -> dict:
        if name not in out:
            out[name] = contract.fitted(name, ended, tmp_path_factory.mktemp(name))
        return out[name]

    return run


@pytest.mark.parametrize("name", ALGORITHMS)
def test_it_has_the_tiny_cpu_and_paper_presets(name):
    contract.check_presets(name)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_it_acts_on_a_batch_in_bounds_reproducibly_and_the_same_after_loading(name, runs, ended):
    contract.check_acting(runs(name), ended)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_the_same_seed_gives_the_same_numbers(name, runs, ended):
    contract.check_same_seed_same_numbers(runs(name), ended)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_a_run_killed_mid_stage_resumes_to_the_uncut_result(name, runs, ended):
    contract.check_kill_and_resume(runs(name), ended)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_cost_is_recorded(name, runs):
    contract.check_cost(runs(name))


@pytest.mark.parametrize("name", ALGORITHMS)
def test_bad_config_values_are_one_clear_error(name):
    contract.check_bad_config(name)
