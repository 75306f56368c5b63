"""Paired per-seed comparisons for the toy studies' verdicts.

Two methods run on the same seeds share each seed's behaviour model and targets, so a cell is decided by
the 95% t-interval of the per-seed differences (or log-ratios), never by two means: a win is an interval
that excludes zero (or the goal), and an interval that covers it is a tie. With 5 seeds the t quantile is
2.78, so a difference must be large against its seed-to-seed spread to count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.studies.exactness import T_95


@dataclass(frozen=True)
class Paired:
    """Mean of the per-seed statistic and its 95% t-interval; a ratio is exp of the mean log-ratio."""

    mean: float
    low: float
    high: float
    seeds: int
    ratio: bool = False

    def text(self, digits: int = 3) -> str:
        if math.isnan(self.mean):
            return "–"
        if math.isnan(self.low):
            return f"{self.mean:.2f}" if self.ratio else f"{self.mean:+.{digits}f}"
        if self.ratio:
            return f"{self.mean:.2f} [{self.low:.2f}, {self.high:.2f}]"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def _by_seed(rows: pd.DataFrame, col: str) -> pd.Series:
    return rows.dropna(subset=[col]).groupby("seed")[col].mean()


def paired(a: pd.DataFrame, b: pd.DataFrame, col: str, ratio: bool = False, col_b: str | None = None) -> Paired:
    """a's `col` against b's (`col_b`, default the same) over the seeds both have: a - b, or a / b when `ratio`."""
    x, y = _by_seed(a, col), _by_seed(b, col_b or col)
    shared = x.index.intersection(y.index)
    if not len(shared):
        return Paired(math.nan, math.nan, math.nan, 0, ratio)
    d = (np.log(x[shared] / y[shared]) if ratio else x[shared] - y[shared]).to_numpy(dtype=float)
    mean = float(d.mean())
    if len(d) < 2:
        low = high = math.nan
    else:
        half = T_95.get(len(d), 1.96) * float(d.std(ddof=1)) / math.sqrt(len(d))
        low, high = mean - half, mean + half
    if ratio:
        mean, low, high = math.exp(mean), math.exp(low), math.exp(high)
    return Paired(mean, low, high, len(d), ratio)


def welch(x: np.ndarray, y: np.ndarray) -> Paired:
    """mean(x) - mean(y) with Welch's 95% t-interval, for two sets of seeds that share nothing (each seed's
    behaviour model trained apart); the t quantile at the Welch-Satterthwaite degrees of freedom rounded down,
    so the interval is never narrower than it should be. `seeds`: x's."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    mean = float(x.mean() - y.mean()) if len(x) and len(y) else math.nan
    if len(x) < 2 or len(y) < 2:
        return Paired(mean, math.nan, math.nan, len(x))
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    if se == 0:
        return Paired(mean, mean, mean, len(x))
    df = (vx + vy) ** 2 / (vx ** 2 / (len(x) - 1) + vy ** 2 / (len(y) - 1))
    # T_95 is keyed by a sample's size (df + 1); past its last entry, that entry's (larger) quantile
    half = T_95[min(max(2, int(math.floor(df)) + 1), max(T_95))] * se
    return Paired(mean, mean - half, mean + half, len(x))


def verdict(diff: Paired) -> str:
    """For a difference a - b: "better" or "worse" when the interval excludes zero, "tie" when it covers it; "–"
    with under two seeds."""
    if diff.seeds < 2 or np.isnan(diff.low):
        return "–"
    return "better" if diff.low > 0 else "worse" if diff.high < 0 else "tie"


def closer(diff: Paired) -> str | None:
    """For a distance difference a - b: "a" (interval below 0), "b" (above), "tie", or None (no interval)."""
    if math.isnan(diff.low):
        return None
    return "a" if diff.high < 0 else "b" if diff.low > 0 else "tie"


def within(ratio: Paired, goal: float) -> str | None:
    """For a ratio a / b and a goal: "yes" (interval at or below the goal), "no" (above), "tie", or None."""
    if math.isnan(ratio.low):
        return None
    return "yes" if ratio.high <= goal else "no" if ratio.low > goal else "tie"


def tally(verdicts: list[str | None], names: dict[str, str]) -> str:
    """"3 wins, 1 loss, 2 ties"-style counts of the decided verdicts, in `names`' order."""
    counted = [v for v in verdicts if v is not None]
    return ", ".join(f"{sum(v == key for v in counted)} {name}" for key, name in names.items())
