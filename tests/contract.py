"""The contract every registered algorithm keeps, as checks that `test_contract.py` runs for every name in
the registry (built-in or plug-in) and that the guide's example runs for its own algorithm: it fits a tiny
dataset at its "tiny" preset; acts on a batch with in-bounds actions of the right shape; the same seed
gives the same numbers; a run killed mid-stage and resumed ends bit for bit where an uncut one does; a
trained policy loads back and acts the same; bad config values and bad observations are one clear error;
cost is recorded."""

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from policies import registry
from policies.errors import ConfigError
from policies.core.training import TrainHooks

PRESETS = ("tiny", "cpu", "paper")
EVAL_EVERY, CHECKPOINT_EVERY = 7, 5


class Killed(Exception):
    pass


def tiny(name: str, **overrides: Any) -> Any:
    return registry.make_config(name, "tiny", {"device": "cpu", **overrides})


def tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a (nested) checkpoint, by path; records with wall times and the like are left out."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in tensors(value, f"{prefix}/{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, value in enumerate(obj) for k, v in tensors(value, f"{prefix}/{i}").items()}
    return {}


def checkpoint_tensors(workdir: Path) -> dict[str, torch.Tensor]:
    return {f"{p.name}{k}": v for p in sorted(workdir.glob("*.pt"))
            for k, v in tensors(torch.load(p, weights_only=True)).items()}


def assert_same_run(a: Path, b: Path) -> None:
    ta, tb = checkpoint_tensors(a), checkpoint_tensors(b)
    assert ta.keys() == tb.keys()
    differ = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not differ, f"tensors differ between {a.name} and {b.name}: {differ[:5]}"


def fitted(name: str, dataset: Any, root: Path) -> dict:
    """`name` fitted once into root/straight with the kill hooks' cadence, recording where on_eval is called and
    acting there as a learning curve's evaluation does (reseeded, on a batch): the run `again`, fitted without
    any of that, must come out bit for bit the same (so curves stay out of a run's identity)."""
    cls, calls = registry.get(name), []
    algo = cls.for_dataset(dataset, tiny(name))
    obs = dataset.transitions.observations[:4].numpy()

    def on_eval(stage: str, step: int) -> None:
        calls.append((stage, step))
        if stage in algo.curve_stages:
            algo.seed(step)
            algo.act(obs)

    hooks = TrainHooks(checkpoint_every=CHECKPOINT_EVERY, eval_every=EVAL_EVERY, on_eval=on_eval)
    record = algo.fit(dataset, root / "straight", hooks=hooks)
    return {"name": name, "cls": cls, "root": root, "algo": algo, "record": record, "calls": calls}


def check_presets(name: str) -> None:
    cls = registry.get(name)
    for preset in PRESETS:
        assert preset in cls.presets, f"{name} has no {preset!r} preset"
        assert isinstance(cls.presets[preset], cls.config_cls)


def check_acting(r: dict, dataset: Any) -> None:
    algo, obs = r["algo"], dataset.transitions.observations[:7].numpy()
    algo.seed(3)
    a = algo.act(obs)
    assert isinstance(a, np.ndarray) and a.shape == (7, dataset.transitions.action_dim) and np.isfinite(a).all()
    assert (a >= dataset.action_space.low).all() and (a <= dataset.action_space.high).all()
    algo.seed(3)
    assert np.array_equal(algo.act(obs), a)
    loaded = r["cls"].load(r["root"] / "straight", dataset)
    loaded.seed(3)
    assert np.array_equal(loaded.act(obs), a)
    assert loaded.untrained == tuple(s for s in r["cls"].stages if s not in r["cls"].policy_stages)
    whole = r["cls"].load(r["root"] / "straight", dataset, every_stage=True)  # a study reading every network
    assert whole.untrained == () and set(whole.records) == set(r["cls"].stages)
    whole.seed(3)
    assert np.array_equal(whole.act(obs), a)
    with pytest.raises(ConfigError, match="observations"):
        algo.act(np.zeros((3, dataset.transitions.obs_dim + 1), np.float32))


def check_same_seed_same_numbers(r: dict, dataset: Any) -> None:
    again = r["cls"].for_dataset(dataset, tiny(r["name"]))
    again.fit(dataset, r["root"] / "again", hooks=TrainHooks(checkpoint_every=CHECKPOINT_EVERY))
    assert_same_run(r["root"] / "straight", r["root"] / "again")
    obs = dataset.transitions.observations[:5].numpy()
    r["algo"].seed(1), again.seed(1)
    assert np.array_equal(r["algo"].act(obs), again.act(obs))


def check_kill_and_resume(r: dict, dataset: Any) -> None:
    assert r["calls"], (f"{r['name']}.fit never called hooks.on_eval, so it cannot be cut mid-stage; train through "
                        "policies.core.training.run_steps (or call the hooks yourself)")
    cut_at = r["calls"][-1]  # the last stage's last evaluation: mid-stage, after a mid-stage checkpoint

    def kill(stage: str, step: int) -> None:
        if (stage, step) == cut_at:
            raise Killed

    cut = r["root"] / "cut"
    with pytest.raises(Killed):
        r["cls"].for_dataset(dataset, tiny(r["name"])).fit(
            dataset, cut, hooks=TrainHooks(checkpoint_every=CHECKPOINT_EVERY, eval_every=EVAL_EVERY, on_eval=kill))
    assert list(cut.glob("*.partial.pt")), "no mid-stage checkpoint was left to resume from"
    resumed = r["cls"].for_dataset(dataset, tiny(r["name"])).fit(dataset, cut,
                                                                  hooks=TrainHooks(checkpoint_every=CHECKPOINT_EVERY))
    assert not list(cut.glob("*.partial.pt")), "a finished stage left its mid-stage checkpoint behind"
    assert any(rec.get("resumed_at", 0) > 0 for rec in resumed["stages"].values()), \
        "the resumed run restarted the cut stage instead of picking it up from its mid-stage checkpoint"
    assert_same_run(r["root"] / "straight", cut)


def check_cost(r: dict) -> None:
    cost = r["record"]["cost"]
    steps = cost["gradient_steps"]
    assert steps and all(isinstance(v, int) and v >= 0 for v in steps.values())
    assert cost["gradient_steps_total"] == sum(steps.values())
    assert cost["nfe_per_action"] >= 1


def check_bad_config(name: str) -> None:
    fields = dataclasses.fields(registry.get(name).config_cls)
    with pytest.raises(ConfigError, match="unknown config key 'no_such_key'"):
        tiny(name, no_such_key=1)
    budgets = [f.name for f in fields if f.name.endswith("steps") and f.type in (int, "int")]
    rates = [f.name for f in fields if f.name.endswith("lr") and f.type in (float, "float")]
    assert budgets or rates, f"{name}'s config has no step budget nor learning rate to check"
    for key, bad in [(k, -1) for k in budgets] + [(k, -1.0) for k in rates]:
        with pytest.raises(ConfigError, match=key):
            tiny(name, **{key: bad})
    if "seed" in {f.name for f in fields}:
        with pytest.raises(ConfigError, match="seed"):
            tiny(name, seed="zero")


def check_all(name: str, dataset: Any, root: Path) -> None:
    """The whole contract for one algorithm (what `test_contract.py` runs test by test)."""
    check_presets(name)
    check_bad_config(name)
    r = fitted(name, dataset, root)
    check_cost(r)
    check_acting(r, dataset)
    check_same_seed_same_numbers(r, dataset)
    check_kill_and_resume(r, dataset)
