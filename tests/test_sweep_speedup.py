"""`diffbench perf speedup`: a sweep's algorithms probed with two code versions in turn; per category ratios, a check
that the two computed the same numbers, and `perf sweep --speedup` projecting the ratios onto a whole spec."""

import sqlite3

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.harness.store import ResultsStore
from bench.reports.sweep_cost import PERIODIC, project, run_costs
from bench.studies import sweep_speedup as sp
from policies.errors import ConfigError

from .conftest import TINY_ID


def test_two_versions_are_probed_in_turn_compared_and_projected(tiny_pointmaze, tmp_path):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"algorithms: [bc]\ndatasets: [{TINY_ID}]\nseeds: [0]\npreset: tiny\nepisodes: 2\n")
    work, out = tmp_path / "work", tmp_path / "speedup.md"
    # "before" is this very checkout: the same code must compute the same numbers
    assert main(["perf", "speedup", str(spec), "--before-tree", str(sp.ROOT), "--fraction", "0.5",
                 "--workdir", str(work), "--out", str(out)]) == 0
    agree = sp.agreement(work, TINY_ID)
    row = agree.set_index("algorithm").loc["bc"]
    assert row["same config"] and row["score gap"] == 0.0 and row["score before"] == row["score after"]
    assert row["stage losses, largest relative gap"] in ("0.0e+00", "none logged")
    runs = pd.read_sql("select config from runs", sqlite3.connect(work / "after" / "results.sqlite"))
    assert '"steps": 25' in runs["config"].iloc[0]  # half of the tiny preset's 50 steps
    shares = sp.core_shares(work, TINY_ID).loc["bc"]
    assert ((shares > 0) & (shares <= 1.05)).all()  # one thread: at most one core's CPU time per wall second
    assert sp.made_with(work, TINY_ID)["before"] == sp.made_with(work, TINY_ID)["after"]
    assert "core share before" in out.read_text() and "| bc |" in out.read_text()
    table = sp.read_ratios(out.with_suffix(".csv"))
    bc = table.set_index("category").loc[:, "ratio"]
    assert {"train: policy", "final evaluation", PERIODIC} <= set(bc.index) and (bc > 0).all()
    assert bc[PERIODIC] == bc["final evaluation"]  # the probe runs no curve: the acting code's ratio stands in
    # a tampered score is seen: the agreement reads each version's own store
    with sqlite3.connect(work / "before" / "results.sqlite") as db:
        db.execute("update evaluations set score_mean = score_mean + 1 where stage = 'final'")
    assert sp.agreement(work, TINY_ID).set_index("algorithm").loc["bc", "score gap"] == 1.0
    # the whole spec before and after: each category of the store's runs times its measured ratio
    cost = tmp_path / "cost.md"
    assert main(["perf", "sweep", str(spec), "--results", str(work / "after"), "--speedup", str(out.with_suffix(".csv")),
                 "--out", str(cost)]) == 0
    section = cost.read_text().split("## Before and after")[1]
    store = ResultsStore(work / "after")  # its one run stands for the spec's one (the same algorithm and domain)
    every = run_costs(store, None, store.table("runs"))
    after = every["core_seconds"].sum() / 3600
    before = sum(s * bc.get(c) for c, s in every.groupby("category")["core_seconds"].sum().items()) / 3600
    assert f"| all | {round(before, 2)} | {round(after, 2)} | {round(before / after, 2)} |" in section


def test_projection_takes_each_categorys_ratio_else_the_algorithms_whole():
    costs = pd.DataFrame({"algorithm": ["a", "a", "a"], "category": ["train: x", "final evaluation", "other"],
                          "version": "after", "core_seconds": [10.0, 2.0, 1.0]})
    probe = pd.concat([costs, costs.assign(version="before", core_seconds=[30.0, 2.0, 1.0])])
    table = sp.ratios(probe)
    assert table.set_index("category").loc["train: x", "ratio"] == 3.0
    sweep = pd.DataFrame({"algorithm": ["a", "a", "a", "a"],
                          "category": ["train: x", PERIODIC, "train: new", "other"],
                          "core_seconds": [100.0, 50.0, 7.0, 1.0]})
    projected = project(sweep, table).set_index("category")
    assert projected.loc["train: x", "before"] == 300.0 and projected.loc[PERIODIC, "before"] == 50.0
    assert projected.loc["train: new", "before"] == pytest.approx(7.0 * 33 / 13)  # the probe's whole ratio
    assert np.allclose(projected["after"], sweep.set_index("category")["core_seconds"].reindex(projected.index))


def test_bad_inputs_are_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("algorithm,ratio\nbc,1\n")
    spec = tmp_path / "s.yaml"
    spec.write_text(f"algorithms: [bc]\ndatasets: [{TINY_ID}]\nseeds: [0]\npreset: tiny\n")
    (tmp_path / "r").mkdir()
    sqlite3.connect(tmp_path / "r" / "results.sqlite").close()
    assert main(["perf", "sweep", str(spec), "--results", str(tmp_path / "r"), "--speedup", str(bad)]) == 2
    assert "not a `diffbench perf speedup` CSV" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="fraction"):
        sp.measure(None, tmp_path, tmp_path, TINY_ID, 0.0, tmp_path)
    with pytest.raises(ConfigError, match="no diffbench checkout"):
        sp.before_code(None, str(tmp_path), tmp_path)
    with pytest.raises(ConfigError, match="git"):
        sp.worktree(sp.ROOT, "no-such-revision-x", tmp_path / "wt")
    assert sp.probe_overrides("qgpo", "tiny", 0.001) == {"behaviour_steps": 1, "q_steps": 1, "energy_steps": 1}


def test_worker_layout_times_both_layouts_and_says_whether_numbers_agree(tmp_path):
    from bench.studies import worker_layout

    out = tmp_path / "layout.md"
    assert main(["perf", "layout", "--algorithms", "td3bc", "--preset", "tiny", "--steps", "3", "--cores", "2",
                 "--out", str(out)]) == 0
    text = out.read_text()
    row, = [line for line in text.splitlines() if line.startswith("| td3bc |")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[1]) > 0 and float(cells[2]) > 0 and cells[4] in ("yes", "no")
    assert cells[5] == "yes"  # two one-thread workers from the same seed end at the same parameters
    with pytest.raises(ConfigError, match="no stage to time"):
        worker_layout.measure(("bc",), "tiny", 3, 2)
    with pytest.raises(RuntimeError, match="worker exited"):  # a worker that dies is reported, not waited on
        worker_layout._run("no_such_algorithm", "tiny", 3, 2, 1)
