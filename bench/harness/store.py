"""The results store: one SQLite file per results directory, written only by the driver.

Workers return `RunResult`s; the driver records each in one transaction, so a crash leaves either
the whole run or none of it. Rows carry what produced them (config, code version, packages,
hardware) and what they cost (wall time per stage, gradient steps, function evaluations per
action, actions/s at evaluation). The schema version lives in SQLite's `user_version`; a store
written by a newer diffbench is refused rather than misread.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from policies.core.checkpoint import probe_write
from policies.errors import ConfigError

SCHEMA_VERSION = 6  # 2: runs.selected_guidance_scale; 3: runs.shared_stages; 4: runs.diagnostics;
# 5: runs.stage_losses, and where each evaluation sits on its learning curve (evaluations.policy_stage, policy_step,
# train_seconds, cpu_seconds)
# 6: runs.dataset_content, the identity of the dataset's content (`envs.catalog.fingerprint`) the run trained on
FILENAME = "results.sqlite"
STORE_SUFFIXES = (".sqlite", ".sqlite3", ".db")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    algorithm TEXT NOT NULL,
    dataset TEXT NOT NULL,
    seed INTEGER NOT NULL,
    preset TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('finished', 'failed')),
    error TEXT,
    config TEXT NOT NULL,
    code_version TEXT,
    packages TEXT,
    hardware TEXT,
    started REAL,
    finished REAL,
    wall_seconds REAL,
    stage_seconds TEXT,
    gradient_steps INTEGER,
    nfe_per_action REAL,
    actions_per_second REAL,
    selected_guidance_scale REAL,
    shared_stages TEXT,
    diagnostics TEXT,
    stage_losses TEXT,
    dataset_content TEXT
);
CREATE TABLE IF NOT EXISTS evaluations (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    stage TEXT NOT NULL,
    step INTEGER NOT NULL,
    gradient_steps INTEGER NOT NULL,
    variant TEXT NOT NULL,
    guidance_scale REAL,
    episodes INTEGER NOT NULL,
    return_mean REAL, return_std REAL, score_mean REAL, score_std REAL,
    seconds REAL, actions_per_second REAL,
    policy_stage TEXT, policy_step INTEGER, train_seconds REAL, cpu_seconds REAL,
    PRIMARY KEY (run_id, stage, step, variant)
);
CREATE TABLE IF NOT EXISTS final_scores (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    variant TEXT NOT NULL,
    guidance_scale REAL,
    episode INTEGER NOT NULL,
    return REAL NOT NULL,
    length INTEGER NOT NULL,
    score REAL,
    PRIMARY KEY (run_id, variant, episode)
);
"""

TABLES = ("runs", "evaluations", "final_scores")
_RUN_COLUMNS = ("run_id", "algorithm", "dataset", "seed", "preset", "status", "error", "config", "code_version",
                "packages", "hardware", "started", "finished", "wall_seconds", "stage_seconds", "gradient_steps",
                "nfe_per_action", "actions_per_second", "selected_guidance_scale", "shared_stages", "diagnostics",
                "stage_losses", "dataset_content")
_EVAL_COLUMNS = ("run_id", "stage", "step", "gradient_steps", "variant", "guidance_scale", "episodes", "return_mean",
                 "return_std", "score_mean", "score_std", "seconds", "actions_per_second", "policy_stage", "policy_step",
                 "train_seconds", "cpu_seconds")
_FINAL_COLUMNS = ("run_id", "variant", "guidance_scale", "episode", "return", "length", "score")


class StoreError(ConfigError):
    """A results store that cannot be used as it is."""


@dataclass
class RunResult:
    """Everything one run produced; built by a worker, written by the driver."""

    run_id: str
    algorithm: str
    dataset: str
    seed: int
    preset: str
    config: dict[str, Any]
    status: str = "finished"
    error: str | None = None
    code_version: str | None = None
    packages: dict[str, str] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    gradient_steps: int | None = None
    nfe_per_action: float | None = None
    actions_per_second: float | None = None
    selected_guidance_scale: float | None = None  # chosen on held-out episodes, when several were evaluated
    # stages restored from the sweep's shared store (trained by another run): their seconds are in
    # stage_seconds and wall_seconds, as the cost of this run alone, but were not spent again here
    shared_stages: list[str] = field(default_factory=list)
    # this attempt's started..finished plus the work it reused from interrupted earlier attempts
    wall_seconds: float | None = None
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # rows of _EVAL_COLUMNS without run_id
    final: list[dict[str, Any]] = field(default_factory=list)  # rows of _FINAL_COLUMNS without run_id
    # checks a stage made of what it trained, by stage (the critic's: policies.algorithms.pretrain.critic_check)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    stage_losses: dict[str, list] = field(default_factory=dict)  # stage -> [[steps done, mean loss since the last], ...]
    # the dataset's content identity (`envs.catalog.fingerprint`): regenerated under other library versions, the same
    # dataset id can hold other bytes, and reports keep runs on different contents apart
    dataset_content: str | None = None

    def __post_init__(self) -> None:
        if self.wall_seconds is None and self.started is not None and self.finished is not None:
            self.wall_seconds = self.finished - self.started


class ResultsStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        if not (self.path.is_file() or self.path.suffix in STORE_SUFFIXES):  # a directory, dots in its name or not
            self.path = self.path / FILENAME
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the results directory {self.path.parent}: {exc.strerror or exc}; "
                             "choose a writable --results directory") from exc
        if not self.path.exists():
            self.check_writable()
        with closing(self._connect()) as con:
            self._check_integrity(con)
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"results store {self.path} has schema version {version}, newer than this diffbench "
                                 f"reads ({SCHEMA_VERSION}); upgrade diffbench, or use another --results directory")
            if version < SCHEMA_VERSION:
                with con:
                    con.executescript(_SCHEMA)  # the tables a store lacks, at the current schema
                    # and the columns later schemas added to the tables it had: unknown (NULL) for its rows
                    for table, column in (("runs", "selected_guidance_scale REAL"), ("runs", "shared_stages TEXT"),
                                          ("runs", "diagnostics TEXT"), ("runs", "stage_losses TEXT"),
                                          ("runs", "dataset_content TEXT"),
                                          ("evaluations", "policy_stage TEXT"), ("evaluations", "policy_step INTEGER"),
                                          ("evaluations", "train_seconds REAL"), ("evaluations", "cpu_seconds REAL")):
                        have = {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
                        if column.split()[0] not in have:
                            con.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
                    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _check_integrity(self, con: sqlite3.Connection) -> None:
        """A damaged page (its header intact) would otherwise surface as a traceback mid-report, a partial export,
        or a run that trains fully and then cannot be recorded: checked once, when the store is opened."""
        try:
            problems = [row[0] for row in con.execute("PRAGMA quick_check(3)")]
        except sqlite3.DatabaseError as exc:
            problems = [str(exc)]
        if problems != ["ok"]:
            raise StoreError(f"results store {self.path} is damaged (sqlite quick_check: {'; '.join(problems)}); "
                             f"move it away and use a new --results directory (the run directories beside it keep "
                             f"their checkpoints and logs)")

    def check_writable(self) -> None:
        """Fail now, before any run, if results cannot be written here (a read-only directory or file)."""
        try:
            probe_write(self.path)
            if self.path.exists():
                with open(self.path, "r+b"):
                    pass
        except OSError as exc:
            raise StoreError(f"cannot write the results store {self.path}: {exc.strerror or exc}; choose a writable "
                             "--results directory") from exc

    def _connect(self) -> sqlite3.Connection:
        try:
            con = sqlite3.connect(self.path, timeout=30)
            con.execute("PRAGMA foreign_keys = ON")
            con.execute("PRAGMA user_version").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path} is not a readable results store ({exc}); move it away or pick another "
                             "--results directory") from exc
        return con

    def record(self, result: RunResult) -> bool:
        """Write one run, replacing any earlier record of the same run id, in one transaction; a failure
        never replaces a finished record (another driver may have finished the same run). Returns
        whether the row was written."""
        row = {
            **{k: getattr(result, k) for k in ("run_id", "algorithm", "dataset", "seed", "preset", "status", "error",
                                                 "code_version", "started", "finished", "gradient_steps",
                                                 "nfe_per_action", "actions_per_second", "selected_guidance_scale",
                                                 "dataset_content")},
            "config": json.dumps(result.config, sort_keys=True), "packages": json.dumps(result.packages, sort_keys=True),
            "hardware": json.dumps(result.hardware, sort_keys=True), "wall_seconds": result.wall_seconds,
            "stage_seconds": json.dumps(result.stage_seconds), "shared_stages": json.dumps(result.shared_stages),
            "diagnostics": json.dumps(result.diagnostics) if result.diagnostics else None,
            "stage_losses": json.dumps(result.stage_losses) if result.stage_losses else None}
        with closing(self._connect()) as con, con:
            con.execute("BEGIN IMMEDIATE")  # one writer from the read below to the commit
            before = con.execute("SELECT status FROM runs WHERE run_id = ?", (result.run_id,)).fetchone()
            if before is not None and before[0] == "finished" and result.status != "finished":
                return False
            con.execute("DELETE FROM runs WHERE run_id = ?", (result.run_id,))  # cascades to its rows
            con.execute(f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({', '.join('?' * len(_RUN_COLUMNS))})",
                        [row[k] for k in _RUN_COLUMNS])
            self._insert(con, "evaluations", _EVAL_COLUMNS, result.run_id, result.evaluations)
            self._insert(con, "final_scores", _FINAL_COLUMNS, result.run_id, result.final)
        return True

    @staticmethod
    def _insert(con: sqlite3.Connection, table: str, columns: tuple[str, ...], run_id: str,
                rows: Iterable[dict[str, Any]]) -> None:
        values = [[run_id if c == "run_id" else r.get(c) for c in columns] for r in rows]
        if values:
            con.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                            values)

    def add_start(self, run_id: str, evaluation: dict[str, Any], episodes: list[dict[str, Any]],
                  note: dict[str, Any]) -> None:
        """Add a finished run's start (its evaluation row and episode rows, variant "start") evaluated after the run
        was recorded (`bench.harness.starts`), with `note` under the run's diagnostics["start"]: what made it. A run
        that holds a start already, or is not a finished run here, is an error and nothing is written."""
        with closing(self._connect()) as con, con:
            con.execute("BEGIN IMMEDIATE")
            row = con.execute("SELECT status, diagnostics FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None or row[0] != "finished":
                raise StoreError(f"no finished run {run_id} in {self.path} to add a start to")
            if con.execute("SELECT 1 FROM final_scores WHERE run_id = ? AND variant = ?",
                           (run_id, evaluation["variant"])).fetchone():
                raise StoreError(f"run {run_id} already holds its start; nothing added")
            self._insert(con, "evaluations", _EVAL_COLUMNS, run_id, [evaluation])
            self._insert(con, "final_scores", _FINAL_COLUMNS, run_id, episodes)
            diagnostics = json.loads(row[1]) if row[1] else {}
            con.execute("UPDATE runs SET diagnostics = ? WHERE run_id = ?",
                        (json.dumps({**diagnostics, "start": note}), run_id))

    def drop(self, run_ids: Iterable[str]) -> pd.DataFrame:
        """Delete whole runs (their evaluations and episodes with them), e.g. runs a fix superseded under another
        config; all or none: an id the store does not hold is an error and nothing is deleted. Returns the
        dropped runs' (run_id, algorithm, dataset, seed, preset, status) rows."""
        ids = list(dict.fromkeys(run_ids))
        if not ids:
            raise StoreError("no run id given to drop")
        marks = ", ".join("?" * len(ids))
        with closing(self._connect()) as con, con:
            con.execute("BEGIN IMMEDIATE")
            rows = pd.read_sql_query(f"SELECT run_id, algorithm, dataset, seed, preset, status FROM runs "
                                     f"WHERE run_id IN ({marks})", con, params=ids)
            held = set(rows["run_id"])
            missing = [i for i in ids if i not in held]
            if missing:
                raise StoreError(f"no run {', '.join(missing)} in {self.path}; nothing dropped (run ids: `diffbench "
                                 "results export` writes runs.csv)")
            con.execute(f"DELETE FROM runs WHERE run_id IN ({marks})", ids)  # cascades to its rows
        return rows

    def status(self) -> dict[str, str]:
        """run_id -> 'finished' | 'failed' for every recorded run."""
        with closing(self._connect()) as con:
            return dict(con.execute("SELECT run_id, status FROM runs").fetchall())

    def table(self, name: str) -> pd.DataFrame:
        if name not in TABLES:
            raise StoreError(f"no table {name!r} in the results store; tables: {', '.join(TABLES)}")
        with closing(self._connect()) as con:
            return pd.read_sql_query(f"SELECT * FROM {name}", con)

    def export(self, out: Path, fmt: str = "csv") -> list[Path]:
        """Every table as `<out>/<table>.<fmt>` (csv or parquet)."""
        if fmt not in ("csv", "parquet"):
            raise StoreError(f"unknown export format {fmt!r}; choose csv or parquet")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name in TABLES:
            df, path = self.table(name), out / f"{name}.{fmt}"
            if fmt == "csv":
                df.to_csv(path, index=False)
            else:
                try:
                    df.to_parquet(path, index=False)
                except ImportError as exc:
                    raise StoreError("parquet export needs pyarrow: pip install 'diffbench[parquet]'") from exc
            written.append(path)
        return written
