"""`diffbench perf acting`: every algorithm timed through its own act at a preset, in one run; those that cannot
act before fine-tuning are named, not timed; the written rows read back for reports."""

from bench.studies.perf_acting import measure, rates, write_report


def test_rows_per_algorithm_and_batch_with_the_fine_tuners_named_and_read_back(tmp_path):
    rows, skipped = measure(["bc", "srpo", "ddpo"], preset="tiny", repeats=1, warmup=1)
    assert set(rows["algorithm"]) == {"bc", "srpo"} and set(skipped) == {"ddpo"}
    assert (rows["actions_per_second"] > 0).all() and (rows["nfe_per_action"] == 1).all()
    write_report(rows, skipped, tmp_path / "acting.md", "diffbench perf acting", baseline="bc")
    text = (tmp_path / "acting.md").read_text()
    assert "| srpo | 1 |" in text and "ddpo (" in text
    back = rates(tmp_path / "acting.csv")
    assert back.loc["srpo", "actions_per_second"] == rows.query("algorithm == 'srpo' and batch == 10")[
        "actions_per_second"].item()
