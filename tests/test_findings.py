"""results/FINDINGS.md: each claim computed from the store, the published order set beside the board's."""

import pandas as pd
import pytest

from bench.cli import main
from bench.reports import findings
from bench.reports.leaderboard import ranked_boards
from bench.reports.reference import DEFAULT_DIR, load_reference
from bench.reports.report import build
from policies.errors import ConfigError
from .test_report import D4RL, store  # noqa: F401  (the fixture: qgpo and bc, scores known, on D4RL hopper and a maze)

TASKS = [f"{env}-{kind}-v2" for env in ("halfcheetah", "hopper", "walker2d")
         for kind in ("medium", "medium-replay", "medium-expert")]


def published(scores: dict[str, float], source: str = "A paper") -> pd.DataFrame:
    """Each algorithm at `scores[name]` on all nine locomotion tasks."""
    return pd.DataFrame([{"algorithm": name, "dataset": task, "score": score, "source": source, "table": "1",
                          "dataset_version": "v2", "checkpoint": "last", "episodes": "10", "scale_selection": "none"}
                         for name, score in scores.items() for task in TASKS])


def test_coverage_counts_each_cells_finished_seeds():
    planned = pd.DataFrame({"run_id": ["a0", "a1", "a2", "b0"], "algorithm": ["bc", "bc", "bc", "iql"],
                            "dataset": ["d", "d", "d", "d"]})
    cells = findings.coverage(planned, {"a0", "a1", "a2", "zz"}).set_index("algorithm")
    assert cells.loc["bc", "finished"] == 3 and cells.loc["bc", "complete"]
    assert cells.loc["iql", "finished"] == 0 and not cells.loc["iql", "complete"]


def test_a_published_average_needs_all_nine_tasks():
    ref = published({"BC": 50.0, "IQL": 70.0})
    averages = findings.published_averages(ref).set_index("algorithm")["average"]
    assert averages.to_dict() == {"BC": 50.0, "IQL": 70.0}
    assert findings.published_averages(ref[ref["dataset"] != TASKS[0]]).empty  # eight tasks: no average
    assert findings.published_averages(load_reference().iloc[:0]).empty


def test_the_published_order_is_read_pair_by_pair_against_the_boards_ranks(store):  # noqa: F811
    report = build(store)  # hopper-medium-v2 (locomotion): qgpo's best scale 80 [70, 90] above bc's 50 [45, 55]
    table, said = findings.published_order(ranked_boards(report), published({"QGPO": 86.6, "BC": 51.9}))
    assert "Published pairs kept here: QGPO > BC." in said
    rows = table.set_index("algorithm")
    assert rows.loc["QGPO", "our rank"] == "=1" and rows.loc["BC", "our rank"] == "3"  # s=0 is rank 2
    assert rows.loc["QGPO", "published (9 D4RL v2 tasks)"] == "86.6 (A paper, last)"
    _, said = findings.published_order(ranked_boards(report), published({"QGPO": 40.0, "BC": 51.9}))
    assert "Reversed here (the order seen here): QGPO > BC." in said  # the paper put BC first; this board does not


def test_the_page_says_what_each_section_read_and_includes_the_checked_notes(store, tmp_path):  # noqa: F811
    report = build(store)
    checked = tmp_path / "checked.md"
    checked.write_text("A cell that looked wrong: run bc-x, checked by run bc-y.\n")
    cells = pd.DataFrame({"algorithm": ["bc", "qgpo"], "dataset": [D4RL, D4RL], "planned": [3, 3],
                          "finished": [3, 1], "complete": [True, False]})
    text = findings.write_findings(report, tmp_path / "FINDINGS.md", published({"QGPO": 86.6, "BC": 51.9}), cells,
                                   checked, "diffbench findings ...").read_text()
    assert "Coverage: 1 of 2 cells" in text and "1 are not yet complete" in text
    assert "By dataset, cells complete: hopper-medium-v2 1/2." in text
    assert "**locomotion** (1 dataset(s): hopper-medium-v2; IQM [95% CI])\n  - rank 1: qgpo[cpu] s=1" in text
    better = next(line for line in text.splitlines() if line.startswith("- better than diffusion BC: "))
    assert "qgpo[cpu] s=1 on hopper-medium-v2 (+30.0 [+30.0, +30.0])" in better  # 70 - 40, 80 - 50, 90 - 60
    assert "No pair with IQL yet." in text  # no iql in this store
    assert text.rstrip().endswith("checked by run bc-y.")


def test_the_command_needs_the_sweep_and_an_existing_notes_file(capsys, store, tmp_path):  # noqa: F811
    assert main(["findings", "--results", str(store.path.parent)]) == 2
    assert "findings needs --spec" in capsys.readouterr().err
    assert main(["findings", "--results", str(store.path.parent), "--spec", "bench/sweeps/leaderboard.yaml",
                 "--checked", str(tmp_path / "missing.md")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_the_page_says_what_the_sweep_has_left_in_core_hours(tmp_path):
    """A sweep of three bc runs, two in the store (90 s each on one thread): the third is projected at their mean."""
    from bench.harness.store import ResultsStore
    from bench.harness.sweep import load_sweep

    from .test_report import run_result

    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"algorithms: [bc]\ndatasets: [{D4RL}]\nseeds: [0, 1, 2]\npreset: cpu\n")
    s = ResultsStore(tmp_path / "store")
    for planned in load_sweep(spec).runs()[:2]:
        run = run_result("bc", D4RL, planned.seed)
        run.run_id, run.hardware = planned.run_id(), {"description": "test CPU", "torch_threads": 1}
        s.record(run)
    out = tmp_path / "FINDINGS.md"
    assert main(["findings", "--results", str(s.path.parent), "--spec", str(spec), "--out", str(out)]) == 0
    text = out.read_text()
    assert "Coverage: 0 of 1 cells" in text and "Left to run: 1 run, projected 0.0 core-hours" in text
    from bench.harness.deadline import projected_cost

    assert projected_cost(load_sweep(spec).runs()[2:], s.table("runs"), 1)[0] == pytest.approx(90 / 3600)


def test_the_default_reference_is_the_repositorys_and_a_missing_one_is_an_error(tmp_path):
    assert DEFAULT_DIR.is_dir() and (DEFAULT_DIR / "offline_rl.csv").is_file()
    ref = load_reference()
    assert {"offline_rl.csv", "corl_last.csv"} <= set(ref["file"])
    corl = findings.published_averages(ref[ref["file"] == "corl_last.csv"]).set_index("algorithm")["average"]
    assert corl.round(2).to_dict() == {"BC": 50.40, "IQL": 81.63, "TD3+BC": 76.45}  # CORL's printed averages
    with pytest.raises(ConfigError, match="no such directory"):
        load_reference(tmp_path / "nowhere")
