"""Published reference numbers: CSV files under `results/reference/`, one row per (algorithm, dataset).

Each row names its source (paper, table), the dataset version the paper used, and the protocol behind
the number (checkpoint, evaluation episodes, how a guidance scale was chosen). A report shows a
published number only beside our runs on the very same dataset id that follow the same protocol: a
D4RL v2 number says nothing about a Minari re-collection or a dataset diffbench generated, and a
best-scale-on-the-reported-episodes number says nothing about a scale chosen on held-out episodes.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from policies.errors import ConfigError

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "results" / "reference"  # the repository's, beside bench/
COLUMNS = ("algorithm", "dataset", "score", "source", "table", "dataset_version")
PROTOCOL = ("checkpoint", "episodes", "scale_selection")  # optional; missing or 'unstated' never matches
UNSTATED = "unstated"


def load_reference(directory: Path | None = None) -> pd.DataFrame:
    """Every `*.csv` in `directory` (default: the repository's results/reference), rows checked."""
    if directory is not None and not Path(directory).is_dir():
        raise ConfigError(f"--reference {directory}: no such directory (name the directory of published reference "
                          "CSVs, or leave the option out for the repository's results/reference)")
    directory = DEFAULT_DIR if directory is None else Path(directory)
    files = sorted(directory.glob("*.csv")) if directory.is_dir() else []
    if not files:
        return pd.DataFrame(columns=[*COLUMNS, *PROTOCOL, "file"])
    frames = []
    for path in files:
        df = pd.read_csv(path, comment="#")
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise ConfigError(f"{path}: reference table lacks column(s) {', '.join(missing)}; "
                              f"each needs {', '.join(COLUMNS)}")
        bad = df[pd.to_numeric(df["score"], errors="coerce").isna()]
        if not bad.empty:
            raise ConfigError(f"{path}: score is not a number for {bad.iloc[0]['algorithm']} on {bad.iloc[0]['dataset']}")
        for column in PROTOCOL:
            df[column] = df[column].fillna(UNSTATED).astype(str) if column in df.columns else UNSTATED
        frames.append(df.assign(file=path.name, score=pd.to_numeric(df["score"])))
    return pd.concat(frames, ignore_index=True)


def matching_dataset(reference_dataset: str, ours: set[str]) -> str | None:
    """Our dataset id a published number applies to: the same id, or None."""
    return reference_dataset if reference_dataset in ours else None


def same_protocol(row: pd.Series, checkpoint: str, episodes: int, selection: str) -> bool:
    """Whether a published row was evaluated as a run of ours: same checkpoint rule, episode count and
    scale choice ('none' for an algorithm without one)."""
    if UNSTATED in (row["checkpoint"], row["episodes"], row["scale_selection"]):
        return False
    try:
        same_episodes = int(float(row["episodes"])) == int(episodes)
    except ValueError:
        return False
    return row["checkpoint"] == checkpoint and same_episodes and row["scale_selection"] == selection
