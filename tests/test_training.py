"""The one training loop: where it evaluates for learning curves, and what it counts as training time."""

import time

import pytest
import torch

from policies.core.training import StageClock, TrainHooks, curve_marks, run_steps


@pytest.mark.parametrize("steps, points, marks", [(100, 10, {10, 20, 30, 40, 50, 60, 70, 80, 90}),
                                                  (7, 3, {3, 5}), (2, 10, {1}), (5, 1, set()), (0, 10, set())])
def test_curve_marks_are_evenly_spaced_inside_the_stage(steps, points, marks):
    assert curve_marks(steps, points) == marks


def test_evaluations_come_at_the_marks_and_their_time_is_not_training_time():
    calls, clock = [], StageClock()

    def on_eval(stage: str, step: int) -> None:
        calls.append((stage, step, clock.stage, clock.seconds))
        time.sleep(0.2)  # an evaluation: the harness's time, not the stage's

    hooks = TrainHooks(curve_points=4, eval_every=3, on_eval=on_eval, clock=clock)
    record = run_steps(lambda i: torch.tensor(float(i)), 8, "policy (bc)", hooks=hooks)
    assert [(stage, step) for stage, step, _, _ in calls] == [("policy", 2), ("policy", 3), ("policy", 4),
                                                              ("policy", 6)]
    assert all(name == "policy" for _, _, name, _ in calls)
    seconds = [s for _, _, _, s in calls]
    assert seconds == sorted(seconds) and seconds[-1] < 0.2  # four 0.2 s evaluations left out
    assert record["seconds"] < 0.2 and 0 <= record["cpu_seconds"] < 0.2


def test_the_cosine_behaviour_rate_decays_to_zero_and_resumes_bit_for_bit(tmp_path):
    """The schedule's state is part of the stage's resumable state: a stage stopped mid-way ends where an
    unbroken one does."""
    from policies.core.diffusion import DiffusionModel, fit_behaviour

    states, actions = torch.randn(64, 3), torch.rand(64, 2) * 2 - 1

    class Stop(Exception):
        pass

    def stop(stage: str, step: int) -> None:
        raise Stop

    def fit(workdir=None, hooks=None):
        torch.manual_seed(0)
        model = DiffusionModel(2, 3, widths=(16, 8, 4))
        fit_behaviour(model, states, actions, steps=20, batch=16, lr=1e-2, lr_schedule="cosine",
                      generator=torch.Generator().manual_seed(1), workdir=workdir, hooks=hooks, fingerprint={"t": 1})
        return model

    whole = fit()
    with pytest.raises(Stop):
        fit(tmp_path, TrainHooks(checkpoint_every=5, eval_every=12, on_eval=stop))
    resumed = fit(tmp_path, TrainHooks(checkpoint_every=5))
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="lr_schedule"):
        fit_behaviour(whole, states, actions, steps=1, batch=4, lr=1e-3, generator=torch.Generator(),
                      lr_schedule="linear")
