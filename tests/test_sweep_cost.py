"""`diffbench perf sweep`: a sweep's core-seconds per algorithm and stage, from its runs in the store; a stage
restored from a shared checkpoint is counted once, in the run that trained it."""

import json

import pandas as pd

from bench.cli import main
from bench.harness.provenance import run_threads
from bench.harness.store import ResultsStore
from bench.harness.sweep import load_sweep
from bench.reports.sweep_cost import OTHER, run_costs
from policies import registry

from .conftest import TINY_ID


def test_a_sweeps_cost_splits_each_runs_own_time_and_counts_shared_stages_once(tiny_pointmaze, tmp_path, capsys,
                                                                               monkeypatch):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"algorithms: [qgpo, ddpo]\ndatasets: [{TINY_ID}]\nseeds: [0]\npreset: tiny\nepisodes: 2\n"
                    "overrides: {device: cpu}\n")
    assert main(["sweep", str(spec), "--results", str(tmp_path / "r"), "--no-progress"]) == 0
    store = ResultsStore(tmp_path / "r")
    costs = run_costs(store, load_sweep(spec))
    runs = store.table("runs").set_index("algorithm")
    by = costs.groupby(["algorithm", "category"])["core_seconds"].sum()
    shared = set(json.loads(runs.loc["ddpo", "shared_stages"]))
    assert shared and not any(f"train: {stage}" in by["ddpo"] for stage in shared)  # paid by qgpo's run
    assert all(f"train: {stage}" in by["qgpo"] for stage in shared)
    assert "final evaluation" in by["qgpo"] and "final evaluation" in by["ddpo"] and OTHER in by["ddpo"]
    for algo in ("qgpo", "ddpo"):  # the parts add up to the run's own wall time times the threads it held
        spent = (runs.loc[algo, "finished"] - runs.loc[algo, "started"]) * run_threads(runs.loc[algo, "hardware"])
        assert abs(by[algo].sum() - spent) < 1e-6 * max(spent, 1.0)
    out = tmp_path / "cost.md"
    assert main(["perf", "sweep", str(spec), "--results", str(tmp_path / "r"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "2 of the spec's 2 runs finished" in text and "| qgpo |" in text and "## Per stage" in text
    assert len(pd.read_csv(out.with_suffix(".csv"))) == len(costs)
    assert "What is left" not in text
    # the leaderboard of one spec's runs: ddpo's rows in the same store are left out
    only = tmp_path / "only_qgpo.yaml"
    only.write_text(spec.read_text().replace("[qgpo, ddpo]", "[qgpo]"))
    board = tmp_path / "LB.md"
    assert main(["leaderboard", "--results", str(tmp_path / "r"), "--spec", str(only), "--out", str(board)]) == 0
    assert "qgpo[tiny]" in board.read_text() and "ddpo" not in board.read_text()
    assert main(["leaderboard", "--results", str(tmp_path / "r"), "--out", str(board)]) == 0
    assert "ddpo[tiny]" in board.read_text()
    # a spec that grew a seed: its runs are projected at the cost of the finished ones (one each here)
    grown = tmp_path / "grown.yaml"
    grown.write_text(spec.read_text().replace("seeds: [0]", "seeds: [0, 1, 2]"))
    assert main(["perf", "sweep", str(grown), "--results", str(tmp_path / "r"), "--out", str(out)]) == 0
    left = out.read_text().split("## What is left, projected")[1]
    own = costs.groupby("algorithm")["core_seconds"].sum() / 3600
    assert "4 runs of the spec are not finished" in left
    for algo in ("qgpo", "ddpo"):
        row, = [line for line in left.splitlines() if line.startswith(f"| {algo} |")]
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == "2" and cells[5] == "1 finished run(s)" and float(cells[4]) == round(2 * own[algo], 2)
    assert "short of competence" not in left
    with monkeypatch.context() as patch:  # a preset declared short of competence: its share is told apart
        patch.setattr(registry.get("ddpo"), "short_of_competence", {"tiny": "later"})
        assert main(["perf", "sweep", str(grown), "--results", str(tmp_path / "r"), "--out", str(out)]) == 0
    assert (f"Of these, {2 * own['ddpo']:.1f} core-hours are runs declared short of competence at this preset "
            "(ddpo[tiny] everywhere)" in out.read_text())
    # the same store through the paired comparison (one seed: no interval, so no verdict)
    report = tmp_path / "versus.md"
    assert main(["compare", "--spec", str(spec), "--baseline", "qgpo", "--results", str(tmp_path / "r"),
                 "--out", str(report)]) == 0
    rows = pd.read_csv(report.with_suffix(".csv")).set_index("algorithm")
    assert rows.loc["ddpo", "verdict"] == "–" and rows.loc["qgpo", "verdict"] == "baseline"
    assert "## " + TINY_ID in report.read_text()
    data = json.loads(ResultsStore(tmp_path / "r").table("runs")["diagnostics"].iloc[0])["dataset"]
    assert f"The data's own score: {data['data_score']:.1f} ({data['how']})." in report.read_text()
