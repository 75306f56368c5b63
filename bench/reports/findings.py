"""results/FINDINGS.md: what the leaderboard says, in a page, every number read off the store.

The claims a reader looks for first (which entries a board tells apart, what guidance and fine-tuning add over
diffusion BC, how the diffusion methods fare against IQL, how the CPU budget's order compares with the published
one) are computed here from the same report the leaderboard ranks, so a page made from a grown store never
carries a number the store no longer backs. What only a person can say (a cell that looked wrong and what was run
to check it) is a hand-written file this page includes as it stands; each of its claims names its runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from bench.reports.leaderboard import RANK_NOTE, entry_aliases, rank_value, ranked_boards
from bench.reports.render import markdown_table, write_page
from bench.reports.report import BEST_ON_REPORTED, Report, provenance

# our algorithm -> its name in results/reference and the entry that follows its paper's scale protocol
PUBLISHED_NAMES = {"bc": "BC", "td3bc": "TD3+BC", "iql": "IQL", "qgpo": "QGPO", "diffusion_ql": "Diffusion-QL",
                   "sfbc": "SfBC", "idql": "IDQL"}
D4RL_LOCOMOTION = re.compile(r"^(halfcheetah|hopper|walker2d)-(medium|medium-replay|medium-expert)-v2$")
LOCOMOTION_TASKS = 9
BASELINE = "iql[cpu]"
Boards = list[tuple[str, list[str], list[str] | None, pd.DataFrame]]  # `leaderboard.ranked_boards`


def _name(dataset: str) -> str:
    """A dataset without its source's prefix ("hopper/medium-small-v0"), as the page names it."""
    return dataset.split("/", 1)[-1]


def coverage(planned: pd.DataFrame, finished: set[str]) -> pd.DataFrame:
    """Per (algorithm, dataset) cell of a sweep (`planned`: one row per run, with run_id): its runs (seeds) planned
    and finished, and whether every one is."""
    cells = planned.assign(done=planned["run_id"].isin(finished)).groupby(["algorithm", "dataset"])["done"]
    out = cells.agg(planned="size", finished="sum").reset_index()
    order = {d: i for i, d in enumerate(dict.fromkeys(planned["dataset"]))}  # the sweep's own order of datasets
    out = out.sort_values("dataset", key=lambda d: d.map(order), kind="stable").reset_index(drop=True)
    return out.assign(complete=out["finished"] == out["planned"])


def told_apart(ranked: Boards, metric: str = "IQM") -> list[str]:
    """Each board's tie groups, best first, by the leaderboard's ranks (1 + the entries whose interval lies wholly
    above an entry's own): entries that share a rank are not told apart."""
    lines = []
    for title, datasets, _, board in ranked:
        if board.empty:
            continue
        names = ", ".join(_name(d) for d in datasets)
        lines.append(f"- **{title}** ({len(datasets)} dataset(s): {names}; {metric} [95% CI])")
        lines += [f"  - rank {rank.lstrip('=')}: " + "; ".join(f"{e} {v}" for e, v in zip(g["entry"], g[metric]))
                  for rank, g in board.groupby("rank", sort=False)]
    return lines


def over_diffusion_bc(report: Report) -> tuple[pd.DataFrame, list[str]]:
    """The paired gains over diffusion BC (`gains.gains_over_behaviour`), without cells the report does not rank,
    and one line per verdict."""
    g = report.gains
    if g.empty:
        return g, ["No entry built on QGPO's behaviour model has a paired run against its s = 0 yet."]
    g = _ranked_cells(report, g)
    table = g[["dataset", "entry", "pairs", "pairing", "diffusion BC", "gain [95% CI]", "verdict"]]
    said = []
    for word, phrase in (("better", "better than"), ("worse", "worse than"), ("tie", "not told apart from")):
        cells = g[g["verdict"] == word]
        if not cells.empty:
            said.append(f"{phrase} diffusion BC: " + "; ".join(
                f"{e} on {_name(d)} ({c})" for e, d, c in zip(cells["entry"], cells["dataset"],
                                                                       cells["gain [95% CI]"])))
    thin = g[~g["verdict"].isin(["better", "worse", "tie"])]
    if not thin.empty:
        said.append("not judged (under two seeds): " + ", ".join(
            f"{e} on {_name(d)}" for e, d in zip(thin["entry"], thin["dataset"])))
    return table, said


def over_own_start(report: Report) -> pd.DataFrame:
    """The gains over each run's own start (`gains.gains_over_start`), without cells the report does not rank."""
    g = report.start_gains
    if g.empty:
        return g
    return _ranked_cells(report, g)[["dataset", "entry", "seeds", "start", "gain [95% CI]", "verdict"]]


def _ranked_cells(report: Report, table: pd.DataFrame) -> pd.DataFrame:
    """`table`'s rows (dataset, entry) but those the report shows and does not rank (short of competence)."""
    return table[[(e, d) not in report.short_cells and e not in report.short
                  for e, d in zip(table["entry"], table["dataset"])]]


def against(report: Report, baseline: str = BASELINE) -> pd.DataFrame:
    """P(X > baseline) for each ranked entry X, over the datasets both ran (the report's stratified bootstrap), and
    whether the interval tells them apart (it excludes 1/2)."""
    imp = report.improvement
    if imp.empty:
        return pd.DataFrame(columns=["entry", f"P(entry > {baseline}) [95% CI]", "datasets", "verdict"])
    short = set(report.short)
    as_x = imp[(imp["y"] == baseline) & ~imp["x"].isin(short)]
    as_y = imp[(imp["x"] == baseline) & ~imp["y"].isin(short)]  # the pair stored the other way round: 1 - P
    rows = pd.concat([as_x[["x", "p_x_better", "lower", "upper", "datasets"]].set_axis(
                          ["entry", "p", "low", "high", "datasets"], axis=1),
                      pd.DataFrame({"entry": as_y["y"], "p": 1 - as_y["p_x_better"], "low": 1 - as_y["upper"],
                                    "high": 1 - as_y["lower"], "datasets": as_y["datasets"]})])
    rows = rows.drop_duplicates("entry").sort_values("p", ascending=False)
    return pd.DataFrame({
        "entry": rows["entry"].to_numpy(),
        f"P(entry > {baseline}) [95% CI]": [f"{p:.2f} [{lo:.2f}, {hi:.2f}]" for p, lo, hi in
                                           rows[["p", "low", "high"]].to_numpy()],
        "datasets": rows["datasets"].to_numpy(),
        "verdict": ["above" if lo > 0.5 else "below" if hi < 0.5 else "not told apart"
                    for lo, hi in rows[["low", "high"]].to_numpy()]})


def published_averages(reference: pd.DataFrame) -> pd.DataFrame:
    """Per algorithm and source, the mean over the nine D4RL v2 locomotion tasks (only where all nine are there)."""
    rows = reference[reference["dataset"].map(lambda d: bool(D4RL_LOCOMOTION.match(str(d)))).astype(bool)]
    out = []
    for (algorithm, source, checkpoint), g in rows.groupby(["algorithm", "source", "checkpoint"]):
        if g["dataset"].nunique() == LOCOMOTION_TASKS:
            out.append({"algorithm": algorithm, "source": source, "checkpoint": checkpoint,
                        "average": float(g.drop_duplicates("dataset")["score"].mean())})
    return pd.DataFrame(out, columns=["algorithm", "source", "checkpoint", "average"])


def _locomotion_board(ranked: Boards) -> pd.DataFrame:
    for title, datasets, _, board in ranked:
        if title.startswith("locomotion"):
            return board.assign(board=title, datasets_named=", ".join(_name(d) for d in datasets))
    return pd.DataFrame()


def _ours_for(board: pd.DataFrame, algorithm: str) -> pd.Series | None:
    """The board row of `algorithm` under its paper's protocol: QGPO's best scale on the reported episodes, the
    others' only entry."""
    label = f"{algorithm}[cpu]" + (BEST_ON_REPORTED if algorithm == "qgpo" else "")
    rows = board[board["entry"].map(lambda e: label in entry_aliases(e))]
    return rows.iloc[0] if not rows.empty else None


def published_order(ranked: Boards, reference: pd.DataFrame, metric: str = "IQM") -> tuple[pd.DataFrame, list[str]]:
    """The published locomotion averages beside our locomotion board (from `ranked_boards`), and each published
    pair's fate here: kept (told apart the same way), reversed (told apart the other way) or not told apart."""
    board = _locomotion_board(ranked)
    published = published_averages(reference)
    if board.empty or published.empty:
        return pd.DataFrame(), ["No locomotion board or no published locomotion average to set beside it yet."]
    first = published.sort_values("source").drop_duplicates("algorithm")  # one average per algorithm for the order
    rows, ours = [], {}
    for algorithm, name in PUBLISHED_NAMES.items():
        pub = published[published["algorithm"] == name]
        mine = _ours_for(board, algorithm)
        if pub.empty and mine is None:
            continue
        if mine is not None:
            ours[name] = rank_value(mine["rank"])
        rows.append({"algorithm": name,
                     "published (9 D4RL v2 tasks)": "; ".join(f"{a:.1f} ({s.split(',')[0]}, {c})" for a, s, c in
                                                              pub[["average", "source", "checkpoint"]].to_numpy())
                     or "not in results/reference",
                     f"ours: {metric} [95% CI]": mine[metric] if mine is not None else "not on the board yet",
                     "our rank": mine["rank"] if mine is not None else "—"})
    table = pd.DataFrame(rows)
    average = dict(zip(first["algorithm"], first["average"]))
    kept, reversed_, tied = [], [], []
    names = [n for n in ours if n in average]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            hi, lo = (a, b) if average[a] >= average[b] else (b, a)
            pair = f"{hi} > {lo}"
            if ours[hi] < ours[lo]:
                kept.append(pair)
            elif ours[hi] > ours[lo]:
                reversed_.append(f"{lo} > {hi}")
            else:
                tied.append(pair)
    said = [f"Our board: {board['board'].iloc[0]} ({board['datasets_named'].iloc[0]}), the CPU preset; the published "
            "averages are over the nine full D4RL v2 tasks at each paper's budget, so only the order is compared, "
            "pair by pair (published: by each row's first number; here: by the board's ranks, two entries told "
            "apart when their ranks differ)."]
    said.append(f"Published pairs kept here: {', '.join(kept) or 'none'}.")
    said.append(f"Reversed here (the order seen here): {', '.join(reversed_) or 'none'}.")
    said.append(f"Not told apart here: {', '.join(tied) or 'none'}.")
    return table, said


def write_findings(report: Report, out: Path, reference: pd.DataFrame, cells: pd.DataFrame, checked: Path | None,
                   command: str, metric: str = "IQM", left: str = "") -> Path:
    """`left`: a sentence on what the sweep has left to run (`cmd_findings` projects it from the store)."""
    prov = provenance(report.scores)
    complete, total = int(cells["complete"].sum()), len(cells)
    missing = cells[~cells["complete"]]
    lines = ["# What the leaderboard says", "",
             f"Generated by `{command}` from the results store (only the sweep's own runs); do not edit by hand. "
             + (f"The section on checked cells is {checked.as_posix()}, written by hand. " if checked else "")
             + f"Code: {', '.join(v[:12] for v in prov['code_versions'])}; hardware: {', '.join(prov['hardware'])}.",
             "",
             f"Coverage: {complete} of {total} cells (algorithm × dataset) of the sweep have their seeds finished"
             + (f"; {len(missing)} are not yet complete, so every statement below is over the cells the store has."
                if len(missing) else "; the sweep is complete.") + (f" {left}" if left else ""), "", "By dataset, cells complete: " + "; ".join(
                 f"{_name(d)} {int(g['complete'].sum())}/{len(g)}"
                 for d, g in cells.groupby("dataset", sort=False)) + ".", ""]
    ranked = ranked_boards(report, metric)
    lines += ["## Which entries the boards tell apart", "", *told_apart(ranked, metric), "", RANK_NOTE, ""]
    gains, said = over_diffusion_bc(report)
    lines += ["## Where guidance and fine-tuning help over diffusion BC", "",
              "Paired seed by seed on the behaviour model both use (QGPO's s = 0 is that model sampled alone); "
              "a verdict is a 95% t-interval of the per-seed differences that excludes zero. A cell whose seeds' "
              "behaviour models were trained apart (the shared stage made again on another CPU) is compared unpaired, "
              "with Welch's interval (its `pairing` says which).", "",
              *[f"- {s}" for s in said], ""]
    if not gains.empty:
        lines += [markdown_table(gains), ""]
    start = over_own_start(report)
    if not start.empty:
        lines += ["What fine-tuning added over the chain it started from (the same run, the same final episodes; runs "
                  "made before the harness evaluated their start are not here):", "", markdown_table(start), ""]
    vs = against(report)
    lines += [f"## The diffusion methods and the others against {BASELINE}", "",
              "P(X > Y): the probability that a run of X scores above a run of Y on a dataset both ran, with its "
              "stratified-bootstrap interval; told apart when the interval excludes 1/2.", ""]
    lines += [markdown_table(vs), ""] if not vs.empty else ["No pair with IQL yet.", ""]
    table, said = published_order(ranked, reference, metric)
    lines += ["## What the CPU budget changes relative to the published ordering", "", *[f"- {s}" for s in said], ""]
    if not table.empty:
        lines += [markdown_table(table), ""]
    lines += ["## Cells that looked wrong, and what was checked", ""]
    lines += [checked.read_text().strip(), ""] if checked else ["(no hand-written file named)", ""]
    return write_page(out, lines)
