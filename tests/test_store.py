"""The SQLite results store: whole runs per transaction, replace-not-duplicate, schema guard, export."""

import sqlite3

import pandas as pd
import pytest

from bench.harness.store import SCHEMA_VERSION, ResultsStore, RunResult, StoreError


def result(run_id: str, status: str = "finished", episodes: int = 3) -> RunResult:
    return RunResult(run_id=run_id, algorithm="qgpo", dataset="d", seed=0, preset="cpu", config={"beta": 3.0},
                     status=status, error=None if status == "finished" else "Traceback: boom", started=10.0,
                     finished=12.5, gradient_steps=100, nfe_per_action=15,
                     evaluations=[{"stage": "final", "step": 100, "gradient_steps": 100, "variant": "guidance_scale=1",
                                   "guidance_scale": 1.0, "episodes": episodes, "return_mean": 1.0}],
                     final=[{"variant": "guidance_scale=1", "guidance_scale": 1.0, "episode": i, "return": float(i),
                             "length": 5, "score": 10.0 * i} for i in range(episodes)])


def test_rerecording_a_run_replaces_it(tmp_path):
    store = ResultsStore(tmp_path)
    store.record(result("a", "failed"))
    store.record(result("a"))
    store.record(result("b"))
    assert store.status() == {"a": "finished", "b": "finished"}
    assert len(store.table("final_scores")) == 6 and len(store.table("evaluations")) == 2
    runs = store.table("runs").set_index("run_id")
    assert runs.loc["a", "wall_seconds"] == pytest.approx(2.5) and runs.loc["a", "error"] is None


def test_dropping_runs_takes_their_rows_with_them_and_an_unknown_id_drops_nothing(capsys, tmp_path):
    from bench.cli import main

    store = ResultsStore(tmp_path)
    for rid in ("a", "b", "c"):
        store.record(result(rid))
    with pytest.raises(StoreError, match="no run zz in .*nothing dropped"):
        store.drop(["a", "zz"])
    assert set(store.status()) == {"a", "b", "c"}
    assert main(["results", "drop", "a", "c", "--results", str(tmp_path)]) == 0
    assert "dropped run a: qgpo on d, seed 0 (cpu, finished)" in capsys.readouterr().out
    assert store.status() == {"b": "finished"}
    assert set(store.table("final_scores")["run_id"]) == set(store.table("evaluations")["run_id"]) == {"b"}


def test_a_store_from_a_newer_schema_is_refused(tmp_path):
    ResultsStore(tmp_path)
    with sqlite3.connect(tmp_path / "results.sqlite") as con:
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1}, newer than this diffbench reads"):
        ResultsStore(tmp_path)


def test_a_store_of_schema_2_gains_the_later_columns_and_keeps_its_runs(tmp_path):
    path = tmp_path / "results.sqlite"
    with sqlite3.connect(path) as con:  # schema 2: runs without shared_stages
        con.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, algorithm TEXT NOT NULL, dataset TEXT NOT NULL, "
                    "seed INTEGER NOT NULL, preset TEXT NOT NULL, status TEXT NOT NULL, error TEXT, config TEXT NOT NULL, "
                    "code_version TEXT, packages TEXT, hardware TEXT, started REAL, finished REAL, wall_seconds REAL, "
                    "stage_seconds TEXT, gradient_steps INTEGER, nfe_per_action REAL, actions_per_second REAL, "
                    "selected_guidance_scale REAL)")
        con.execute("INSERT INTO runs (run_id, algorithm, dataset, seed, preset, status, config) "
                    "VALUES ('old', 'bc', 'd', 0, 'cpu', 'finished', '{}')")
        con.execute("PRAGMA user_version = 2")
    con.close()
    store = ResultsStore(tmp_path)
    new = result("new")
    new.shared_stages = ["behaviour", "critic"]
    new.diagnostics = {"critic": {"q_data_mean": 3.5}}
    store.record(new)
    runs = store.table("runs").set_index("run_id")
    assert pd.isna(runs.loc["old", "shared_stages"]) and runs.loc["new", "shared_stages"] == '["behaviour", "critic"]'
    assert pd.isna(runs.loc["old", "diagnostics"]) and runs.loc["new", "diagnostics"] == '{"critic": {"q_data_mean": 3.5}}'
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


def test_a_corrupt_store_is_one_clear_error(tmp_path):
    (tmp_path / "results.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="is not a readable results store"):
        ResultsStore(tmp_path)
    assert (tmp_path / "results.sqlite").read_bytes().startswith(b"not a database")  # left as it was


def test_a_store_with_a_damaged_page_is_one_clear_error_when_opened(tmp_path):
    """Header intact, a page in the middle overwritten: opening the store says so, before any training or export
    (it used to surface as a traceback mid-report, or after a whole run's training, at the store write)."""
    store = ResultsStore(tmp_path)
    for i in range(40):
        store.record(result(f"run{i}", episodes=50))
    path = tmp_path / "results.sqlite"
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 8 * page
    data[3 * page: 5 * page] = b"\xff" * (2 * page)
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="is damaged .*quick_check.*use a new --results directory"):
        ResultsStore(tmp_path)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_writes_every_table(tmp_path, fmt):
    store = ResultsStore(tmp_path)
    store.record(result("a"))
    paths = store.export(tmp_path / "out", fmt)
    assert sorted(p.name for p in paths) == sorted(f"{t}.{fmt}" for t in ("runs", "evaluations", "final_scores"))
    read = pd.read_csv if fmt == "csv" else pd.read_parquet
    final = read(tmp_path / "out" / f"final_scores.{fmt}")
    assert final["score"].tolist() == [0.0, 10.0, 20.0]
