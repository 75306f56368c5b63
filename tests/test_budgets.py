"""The budget study: runs at factors of a preset's step counts, a table per entry with costs and curve ends."""

import json

import pytest

from bench.cli import main
from bench.harness.executors import run_all
from bench.harness.store import ResultsStore
from bench.studies import budgets
from policies import registry
from policies.errors import ConfigError

from .conftest import TINY_ID


def test_a_budget_scales_every_stage_of_the_preset():
    base = registry.make_config("qgpo", "cpu")
    assert budgets.budget_overrides("qgpo", "cpu", 2.0) == {"behaviour_steps": 2 * base.behaviour_steps,
                                                           "q_steps": 2 * base.q_steps, "energy_steps": 2 * base.energy_steps}
    assert budgets.budget_overrides("iql", "tiny", 0.5) == {"critic_steps": 25, "actor_steps": 15}
    with pytest.raises(ConfigError, match="factors must be finite numbers > 0"):
        budgets.budget_overrides("bc", "cpu", 0.0)


def test_every_algorithm_names_budget_fields_that_are_step_counts_of_its_config():
    for name in registry.available():
        cls = registry.get(name)
        config = registry.make_config(name, "cpu")
        assert cls.budget_fields, name
        assert all(isinstance(getattr(config, f), int) and getattr(config, f) > 0 for f in cls.budget_fields), name


def test_the_study_tables_each_budget_with_its_cost_and_where_its_curve_ended(tiny_pointmaze, tmp_path):
    overrides = {"qgpo": {"device": "cpu", "behaviour_steps": 40, "q_steps": 20, "energy_steps": 20}}
    specs = budgets.study_specs(["bc", "qgpo"], [TINY_ID], [0, 1], [0.5, 1.0], preset="tiny", episodes=2,
                                curve_points=2, curve_episodes=2, overrides=overrides)
    assert len(specs) == 2 * 2 * 2
    half = [s for s in specs if s.algorithm == "qgpo" and s.overrides["q_steps"] == 25]
    assert half and half[0].overrides["behaviour_steps"] == 25  # the budget wins over a study's own overrides
    out = run_all(specs, tmp_path / "r", workers=1, progress=False)
    assert len(out["finished"]) == 8, [r.error for r in out["failed"]]
    table = budgets.budget_table(ResultsStore(tmp_path / "r"), "tiny")
    assert sorted(table["factor"].unique()) == [0.5, 1.0]
    bc = table[table["algorithm"] == "bc"].set_index("factor")
    assert bc.loc[1.0, "gradient_steps"] == 50 and bc.loc[0.5, "gradient_steps"] == 25 and (bc["seeds"] == 2).all()
    assert (table["core_minutes"] > 0).all() and table["last"].notna().all()
    qgpo = table[table["algorithm"] == "qgpo"]
    assert sorted(qgpo["scale"].unique()) == [0.0, 1.0]  # diffusion BC and the exact tilt, both at every budget
    flat = budgets.flattened_at(table)
    assert set(flat["flat_from"]) <= {0.5, 1.0} and len(flat) == 3 and (flat["budgets"] == 2).all()
    one = budgets.flattened_at(table[table["factor"] == 1.0])
    assert (one["budgets"] == 1).all()  # a single budget says nothing of where the curve flattens
    one_page = budgets.write(table[table["factor"] == 1.0], tmp_path / "one.md", "cmd", "code", "hw", "tiny").read_text()
    assert "not judged (×1 only)" in one_page
    code = main(["budgets", "--algorithms", "bc", "--datasets", TINY_ID, "--preset", "tiny", "--factors", "0.5,1",
                 "--seeds", "0,1", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "budgets.md"), "--no-run"])
    text = (tmp_path / "budgets.md").read_text()
    assert code == 0 and "## bc" in text and "×0.5" in text and "Flat from:" in text and "## qgpo" in text
    # the competence checks read one budget: the preset's own (here the runs at x1)
    from bench.studies import competence

    (tmp_path / "scratch").mkdir()
    at_one = competence.at_preset(ResultsStore(tmp_path / "r"), "tiny", tmp_path / "scratch")
    assert len(at_one.table("runs")) == 4 and len(ResultsStore(tmp_path / "r").table("runs")) == 8
    table, _ = competence.checks(at_one)
    assert table[table.check.str.startswith("diffusion BC")].iloc[0].holds is not None  # one row each: measured


def test_the_competence_checks_read_each_claim_off_the_store(tmp_path):
    """BC at 30 ± 1; diffusion BC at 25 (below BC's interval) with the data at 33 (worst seed within 10); QGPO s = 1
    above s = 0 on every seed; Q_0 inside its range; a run of 20 core-minutes."""
    from bench.harness.store import RunResult
    from bench.studies import competence

    store = ResultsStore(tmp_path / "store")
    hopper = "diffbench/hopper/medium-small-v0"

    def run(algo, seed, scores, minutes=5.0, diagnostics=None):
        final = [{"variant": "default" if s is None else f"guidance_scale={s:g}", "guidance_scale": s, "episode": i,
                  "return": v, "length": 10, "score": v} for s, v in scores.items() for i in range(2)]
        store.record(RunResult(run_id=f"{algo}-{seed}", algorithm=algo, dataset=hopper, seed=seed, preset="cpu",
                               config={"seed": seed}, started=0.0, finished=60.0 * minutes, gradient_steps=10,
                               hardware={"torch_threads": 1}, final=final, diagnostics=diagnostics or {}))

    critic = {"critic": {"q_data_mean": 100.0, "value_bounds": [0.1, 566.0], "outside_bounds": False,
                         "mc_return_mean": 120.0, "mc_correlation": 0.6},
              "dataset": {"data_score": 33.0, "how": "the data's episodes"}}
    for seed, (bc, s0, s1) in enumerate(((29.0, 24.0, 26.0), (30.0, 25.0, 28.0), (31.0, 26.0, 27.0))):
        run("bc", seed, {None: bc})
        run("qgpo", seed, {0.0: s0, 1.0: s1}, minutes=20.0, diagnostics=critic)
    table, _ = competence.checks(store)
    assert not table[table.check.str.startswith("diffusion BC")].iloc[0].holds  # 25 below BC's [29, 31]
    row = table[table.check.str.startswith("no seed")].iloc[0]
    assert row.holds and "worst seed 24.0 against the data's 33.0" in row.figure
    paired = table[table.check.str.startswith("QGPO s = 1")].iloc[0]
    assert paired.holds and paired.figure.startswith("s = 1 − s = 0: +2.0")
    assert table[table.check.str.startswith("QGPO's Q_0")].iloc[0].holds
    cost = table[table.check.str.startswith("qgpo's median run")].iloc[0]
    assert not cost.holds and "20.0 core-minutes" in cost.figure
    assert table[table.check.str.startswith("diffusion_ql")].iloc[0].holds is None  # not run: not measured
    notes = tmp_path / "notes.md"
    notes.write_text("- tried a larger behaviour budget\n")
    assert main(["competence", "--results", str(tmp_path / "store"), "--out", str(tmp_path / "c.md"),
                 "--notes", str(notes)]) == 0
    text = (tmp_path / "c.md").read_text()
    assert "| diffusion BC (QGPO s = 0) within MLP BC's 95% interval or above |" in text and "- tried a larger" in text
    # a variant beside the preset (beta_Q = 0, guidance hurting on every seed) is named by its differing setting
    # and held to the same claims, apart from the preset's runs
    def variant(seed, s0, s1):
        final = [{"variant": f"guidance_scale={s:g}", "guidance_scale": s, "episode": i, "return": v, "length": 10,
                  "score": v} for s, v in ((0.0, s0), (1.0, s1)) for i in range(2)]
        store.record(RunResult(run_id=f"beta0-{seed}", algorithm="qgpo", dataset=hopper, seed=seed, preset="cpu",
                               config={"seed": seed, "beta_q": 0.0}, started=0.0, finished=60.0, gradient_steps=10,
                               hardware={"torch_threads": 1}, final=final, diagnostics=critic))

    for seed, (s0, s1) in enumerate(((30.0, 20.0), (31.0, 22.0), (29.0, 18.0))):
        variant(seed, s0, s1)
    runs = store.table("runs").set_index("run_id")
    assert competence.variant_settings(runs.loc["beta0-1"], "cpu") == "beta_q=0.0"
    assert competence.variant_settings(runs.loc["qgpo-1"], "cpu") is None
    steps = registry.make_config("qgpo", "cpu").to_dict()
    apart = runs.loc["qgpo-1"].copy()
    apart["config"] = json.dumps({**steps, "behaviour_steps": 2 * steps["behaviour_steps"]})  # one stage's budget
    assert competence.variant_settings(apart, "cpu") == f"behaviour_steps={2 * steps['behaviour_steps']}"
    apart["config"] = json.dumps({**steps, **{f: 2 * steps[f] for f in registry.get("qgpo").budget_fields}})
    assert competence.variant_settings(apart, "cpu") is None  # every stage x2: a budget of the study, not a variant
    raw = apart.copy()  # locomotion's default transform is the IQL paper's; raw rewards are a variant
    raw["dataset"], raw["config"] = "D4RL/hopper/medium-v0", json.dumps({**steps, "protocol": {"reward_transform": "none"}})
    assert competence.variant_settings(raw, "cpu") == "reward_transform=none"
    raw["config"] = json.dumps({**steps, "protocol": {"reward_transform": "locomotion"}})
    assert competence.variant_settings(raw, "cpu") is None
    (tmp_path / "scratch").mkdir()
    stores = competence.variants(store, "cpu", tmp_path / "scratch")
    assert list(stores) == ["beta_q=0.0"] and len(stores["beta_q=0.0"].table("runs")) == 3
    tried = competence.variant_checks(stores).set_index("check")
    assert tried.loc["qgpo s = 1 score", "figure"].startswith("20.0 ± 2.0")
    assert not tried.loc["QGPO s = 1 at or above its s = 0 (paired over seeds, interval not below zero)", "holds"]
    assert main(["competence", "--results", str(tmp_path / "store"), "--out", str(tmp_path / "c.md"),
                 "--preset", "cpu"]) == 0
    text = (tmp_path / "c.md").read_text()
    assert "## Variants run beside the preset" in text and "| beta_q=0.0 | qgpo s = 0 score |" in text


def test_the_curves_axis_names_a_success_rate_on_ogbench_and_a_normalised_score_elsewhere():
    from bench.reports.plots import score_label

    cube, hopper = "diffbench/ogbench/cube-single-play-small-singletask-v0", "diffbench/hopper/medium-small-v0"
    assert score_label([cube]) == "success rate (%)"
    assert score_label([hopper]) == "normalised score"
    assert score_label([hopper, cube]) == "normalised score (OGBench: success %)"
