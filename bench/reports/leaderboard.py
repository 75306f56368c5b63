"""The leaderboard (entries ranked by an aggregate with intervals) and two-entry comparisons.

`results/LEADERBOARD.md` is only ever this module's output: `diffbench leaderboard` rewrites it
from the store, so the committed board always matches the runs behind it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.reports import stats
from bench.reports.render import fmt, html_page, markdown_table, tables
from bench.studies.paired import paired, verdict
from bench.reports.report import (BEST_ON_REPORTED, REPS, SELECTED, UNRECORDED, Report, cohort_difference,
                                  entry_cohorts, provenance, score_matrix)
from policies.errors import ConfigError

LOWER_IS_BETTER = {"optimality gap"}
EVERY = "every dataset"
PART = "the datasets at least half its algorithms ran"


def boards(report: Report) -> list[tuple[str, list[str], list[str] | None]]:
    """(title, datasets, entries) of each ranking: every dataset in the store, then each domain's when there are
    several domains. An aggregate ranks entries only over one set of datasets, so entries that ran on
    different datasets are never ranked against each other; nor are entries that ran those datasets under different
    presets or protocols (`report.cohort`): each such group is a board of its own (entries None: one group).
    While a sweep fills, a domain's board takes only the datasets at least half its algorithms have run (`core`):
    one cheap entry that ran ahead onto a new dataset would otherwise shrink the board to itself."""
    left_out = set(unrankable(report))
    rows = report.per_dataset[~report.per_dataset["dataset"].isin(left_out)]
    if rows.empty:
        return []
    datasets = rows.groupby("domain")["dataset"].apply(lambda d: sorted(set(d))).to_dict()
    cores = {name: core(report, group) for name, group in datasets.items()}
    every = sorted(d for group in cores.values() for d in group)
    whole = all(cores[name] == datasets[name] for name in datasets)
    named = {name: name if cores[name] == datasets[name] else f"{name}, {PART}" for name in datasets}
    sets = [(named[next(iter(datasets))], cores[next(iter(datasets))])] if len(datasets) == 1 else \
        [(EVERY if whole else f"{EVERY}: each domain's datasets at least half its algorithms ran", every),
         *((named[name], cores[name]) for name in sorted(datasets))]
    # a dataset outside its domain's core, or whose entries its domain's board leaves out (they ran none of the
    # domain's other datasets, or another content of the same id), gets a board of its own, so that every entry is
    # ranked somewhere it can be
    for name in sorted(datasets):
        group = cores[name]
        ranked = set(covering(report, group)) if len(group) > 1 else set()
        sets += [(dataset, [dataset]) for dataset in datasets[name]
                 if dataset not in group or (len(group) > 1 and set(covering(report, [dataset])) - ranked)]
    out: list[tuple[str, list[str], list[str] | None]] = []
    for title, names in sets:
        if not names:  # no dataset of the domain has half its algorithms yet: each has its own board
            continue
        groups: dict[tuple[str, ...], list[str]] = {}
        for entry in covering(report, names):
            held = entry_cohorts(report.scores, entry, names)
            groups.setdefault(tuple(held[d] for d in names), []).append(entry)
        if len(groups) <= 1:
            out.append((title, names, None))
            continue
        for key, entries in sorted(groups.items()):
            out.append((f"{title}, {' / '.join(sorted(set(key)))}", names, entries))
    return out


def ranking(report: Report, metric: str = "IQM", datasets: list[str] | None = None,
            entries: list[str] | None = None) -> pd.DataFrame:
    """Entries (default: all) with a score on each of `datasets` (default: every dataset in the store a board may
    rank: not `unrankable`), ordered by `metric` over them (best first), with its interval; `unranked(...)` names
    the others."""
    if metric not in stats.AGGREGATES:
        raise ConfigError(f"unknown aggregate {metric!r}; choose one of {', '.join(stats.AGGREGATES)}")
    if datasets is None:
        left_out = set(unrankable(report))
        datasets = sorted(d for d in report.per_dataset["dataset"].unique() if d not in left_out)
    rows = []
    still = filling(report, datasets)
    chosen = [e for e in covering(report, datasets) if (entries is None or e in entries) and e not in report.short
              and not any((e, d) in report.short_cells for d in datasets) and e not in still]
    budget = report.budget.set_index("entry")["core_minutes"] if not report.budget.empty else pd.Series(dtype=float)
    for entry, same in _coincident(report, chosen, datasets).items():
        m, _, n = score_matrix(report.scores, entry, datasets)
        if np.isnan(m).any():
            continue
        estimate, low, high = stats.aggregate_intervals({entry: m}, reps=REPS)[entry][metric]
        base = entry.split(" s=")[0] + " "
        label = entry + (f" (= {', '.join(x.removeprefix(base) for x in same)})" if same else "")
        runs = report.scores[(report.scores["entry"] == entry) & report.scores["dataset"].isin(datasets)]
        rows.append({"entry": label, "estimate": estimate, "lower": low, "upper": high, "seeds": n,
                     "nfe": float(runs["nfe_per_action"].median()),
                     "core_minutes": budget.get(runs["run_entry"].iloc[0], np.nan)})
    if not rows:
        return pd.DataFrame(columns=["rank", "entry", metric, "datasets", "seeds", "NFE per action",
                                     "core-minutes per run"])
    lower = metric in LOWER_IS_BETTER
    rows = pd.DataFrame(rows).sort_values(["estimate", "entry"], ascending=[lower, True])
    rows["rank"] = separated_ranks(rows["lower"].to_numpy(), rows["upper"].to_numpy(), lower)
    # listed by rank, then estimate: a wide interval can share rank 1 with a lower estimate than an entry that some
    # other entry surely beats, and a board read top-down must not put that entry (rank 2) above it (rank =1)
    rows = rows.assign(_rank=rows["rank"].map(rank_value)).sort_values("_rank", kind="stable")
    return pd.DataFrame({
        "rank": rows["rank"].to_numpy(), "entry": rows["entry"].to_numpy(),
        metric: [f"{fmt(e)} [{fmt(lo)}, {fmt(hi)}]" for e, lo, hi in rows[["estimate", "lower", "upper"]].to_numpy()],
        "datasets": len(datasets), "seeds": rows["seeds"].to_numpy(),
        # its budget beside every row (the report's "Budget per entry" table has the steps, batches and widths)
        "NFE per action": [fmt(v, 0) for v in rows["nfe"]], "core-minutes per run": [fmt(v) for v in rows["core_minutes"]]})


RANK_NOTE = ("Rank: 1 + the number of entries whose interval lies wholly better; entries whose intervals overlap share "
             "a rank (=k), and their order is not a result. An entry followed by (= ...) is the same runs at the same "
             "scales as the entries named there.")


def ranked_boards(report: Report, metric: str = "IQM") -> list[tuple[str, list[str], list[str] | None, pd.DataFrame]]:
    """Each of `boards` with its `ranking` by `metric`: (title, datasets, entries, board), each ranked once."""
    return [(title, datasets, entries, ranking(report, metric, datasets, entries))
            for title, datasets, entries in boards(report)]


def entry_aliases(label: str) -> list[str]:
    """A board row's entry and the entries it stands for, as `ranking` labels them
    ("qgpo[cpu] s=1 (= s=best on reported episodes)")."""
    main, _, rest = label.partition(" (= ")
    base = main.split(" s=")[0]
    return [main, *(f"{base} {other}" for other in rest.rstrip(")").split(", ") if other)]


def _trim_note(metric: str, board: pd.DataFrame, datasets: int) -> str:
    """The IQM drops a quarter of the scores at each end: with fewer than 4 scores it drops none."""
    if metric != "IQM" or board.empty:
        return ""
    n = int(board["seeds"].min()) * datasets
    return (f" With {n} score(s) per entry (seeds × datasets), the IQM trims nothing: it is their mean."
            if n < 4 else "")


def separated_ranks(lower: np.ndarray, upper: np.ndarray, lower_is_better: bool = False) -> list[str]:
    """A rank an interval earns: 1 + the number of entries whose interval lies wholly better than this one's. Entries
    whose intervals overlap share a rank ("=2"), so the order between them is not read as a result."""
    if lower_is_better:
        lower, upper = -upper, -lower
    ranks = [1 + int((lower > hi).sum()) for hi in upper]
    return [f"={r}" if ranks.count(r) > 1 else str(r) for r in ranks]


def rank_value(label: str) -> int:
    """The number of a `separated_ranks` label ("=2" -> 2)."""
    return int(label.lstrip("="))


def _coincident(report: Report, entries: list[str], datasets: list[str]) -> dict[str, list[str]]:
    """entry -> the other entries that are the very same scores (same runs, same scale on every dataset): a
    best-on-reported or held-out choice that picked one fixed scale is that scale's row, not another entry."""
    df = report.scores[report.scores["dataset"].isin(datasets)]
    key = {e: tuple(sorted(zip(g["dataset"], g["run_id"], g["guidance_scale"].fillna(-1.0))))
           for e, g in df[df["entry"].isin(entries)].groupby("entry")}
    out: dict[str, list[str]] = {}
    for entry in sorted(entries, key=lambda e: (SELECTED in e or BEST_ON_REPORTED in e, e)):  # fixed scales first
        twin = next((kept for kept in out if key.get(kept) == key.get(entry)), None)
        if twin is None:
            out[entry] = []
        else:
            out[twin].append(entry)
    return out


def _held(report: Report, datasets: list[str]) -> dict[str, int]:
    """entry -> how many of `datasets` it has a score on (entries on none left out)."""
    held = report.per_dataset.groupby("entry")["dataset"].agg(lambda d: len(set(d) & set(datasets)))
    return {e: int(n) for e, n in sorted(held.items()) if n}


def unrankable(report: Report) -> list[str]:
    """Datasets on which every entry's preset is declared short of competence for the dataset's family
    (`Report.short_cells`): shown in the per-dataset table, on no board."""
    every = sorted(report.per_dataset["dataset"].unique())
    return [d for d in every if all((e, d) in report.short_cells for e in covering(report, [d]))]


def core(report: Report, datasets: list[str]) -> list[str]:
    """The datasets among `datasets` that a domain's board takes: of each id's contents (`id @content`, never
    pooled) the one most algorithms ran (contents recorded before first), and of those the ones at least half the
    algorithms on any of them ran."""
    df = report.scores[report.scores["dataset"].isin(datasets)]
    ran = df.groupby("dataset")["algorithm"].nunique()
    main: dict[str, str] = {}
    for d in sorted(set(datasets), key=lambda x: (not x.endswith(" @" + UNRECORDED), ran.get(x, 0))):
        main[d.split(" @")[0]] = d  # the last, the most run, stays
    algorithms = df.loc[df["dataset"].isin(main.values()), "algorithm"].nunique()
    return sorted(d for d in main.values() if 2 * ran.get(d, 0) >= algorithms)


def held_back(report: Report, datasets: list[str]) -> list[str]:
    """The rankable datasets of the domains `datasets` span that a domain's (or every dataset's) board over
    `datasets` leaves out (`core`)."""
    rows = report.per_dataset[~report.per_dataset["dataset"].isin(unrankable(report))]
    domains = set(rows.loc[rows["dataset"].isin(datasets), "domain"])
    return sorted(set(rows.loc[rows["domain"].isin(domains), "dataset"]) - set(datasets))


def covering(report: Report, datasets: list[str]) -> list[str]:
    """Entries with a score on every one of `datasets`."""
    return [e for e, n in _held(report, datasets).items() if n == len(set(datasets))]


def filling(report: Report, datasets: list[str]) -> dict[str, str]:
    """Entries on every one of `datasets` with fewer seeds on one of them than another entry there has (a cell a
    sweep is still filling), each with what it has: one seed's score has no interval, and a seed count cut to the
    smallest would rank every seed of it against one. Ranked once their seeds are in."""
    out = {}
    for entry in covering(report, datasets):
        short = [f"{report.filling_cells[(entry, d)]} on {d}" for d in sorted(set(datasets))
                 if (entry, d) in report.filling_cells]
        if short:
            out[entry] = "; ".join(short)
    return out


def unranked(report: Report, datasets: list[str]) -> list[str]:
    """Entries on some but not all of `datasets`, each with how many it covers."""
    return [f"{e} ({n} of {len(set(datasets))})" for e, n in _held(report, datasets).items() if n < len(set(datasets))]


def write_leaderboard(report: Report, out: Path, metric: str, command: str) -> list[Path]:
    """LEADERBOARD.md and LEADERBOARD.html beside it: one ranking per set of datasets (`boards`)."""
    ranked: dict[str, pd.DataFrame] = {}
    md_boards: list[str] = []
    for title, datasets, entries, board in ranked_boards(report, metric):
        heading = f"Ranked by {metric} over {title} (95% stratified-bootstrap CI)"
        ranked[heading] = board
        md_boards += [f"## {heading}", "Datasets: " + ", ".join(datasets) + ".", markdown_table(board),
                      RANK_NOTE + _trim_note(metric, board, len(datasets))]
        later = held_back(report, datasets) if title not in datasets else []  # not a dataset's own board
        if later:
            md_boards.append("Left to boards of their own until at least half the algorithms of their domain have run "
                             "them (or, for another content of a dataset id, until it is the one most ran): "
                             + ", ".join(later) + ".")
        left = unranked(report, datasets)
        if left:
            md_boards.append("Not ranked here, for want of a score on every dataset above: " + ", ".join(left) + ".")
        still = [f"{e} ({what})" for e, what in filling(report, datasets).items() if entries is None or e in entries]
        if still:
            md_boards.append("Not ranked yet, their seeds still running: " + ", ".join(still) + ".")
        short = [e for e in covering(report, datasets) if (entries is None or e in entries) and (
            e in report.short or any((e, d) in report.short_cells for d in datasets))]
        if short:
            md_boards.append("Not ranked, short of competence at their preset's budget (why: Notes): "
                             + ", ".join(short) + ".")
    left_out = unrankable(report)
    if left_out:
        md_boards += ["## Shown, not ranked", "On these datasets every entry's preset is declared short of competence "
                      "for the dataset's family, so no board ranks them (why: Notes; scores: Per dataset): "
                      + ", ".join(left_out) + "."]
    meta = provenance(report.scores)
    per_dataset = tables(report)["Per dataset: normalised score, mean ± std over seeds [95% CI]"]
    intro = [f"Generated by `{command}` from the results store; do not edit by hand.",
             "Code: " + ", ".join(meta["code_versions"]) + "; hardware: " + "; ".join(meta["hardware"]) + "."]
    md = ["# diffbench leaderboard", *intro, *md_boards, "## Per dataset", markdown_table(per_dataset),
          "## Protocol", "\n".join(f"- {p}" for p in report.protocol)]
    if report.notes:
        md += ["## Notes", "\n".join(f"- {n}" for n in report.notes)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n\n".join(md) + "\n")
    page = out.with_suffix(".html")
    page.write_text(html_page("diffbench leaderboard", intro, report, {**ranked, "Per dataset": per_dataset}))
    return [out, page]


def resolve_entries(report: Report, name: str) -> list[str]:
    """An entry, every entry of an algorithm, or the entries of one run id."""
    df = report.scores
    for column in ("entry", "algorithm", "run_id"):
        hits = sorted(df.loc[df[column] == name, "entry"].unique())
        if hits:
            return hits
    raise ConfigError(f"nothing in the store is called {name!r}; entries: {', '.join(sorted(df['entry'].unique()))}")


def compare(report: Report, a: str, b: str) -> pd.DataFrame:
    """Each pair of entries named by `a` and `b`, on every dataset both have: means, the mean of the per-seed
    differences over the seeds both ran with its 95% t-interval (a run of one seed pairs with the other's run of that
    seed: the same data order and, for runs on shared stages, the same pretrained weights), and P(A > B)."""
    rows = []
    for ea in resolve_entries(report, a):
        for eb in resolve_entries(report, b):
            if ea == eb:
                continue
            shared = sorted(set(report.scores.loc[report.scores["entry"] == ea, "dataset"])
                            & set(report.scores.loc[report.scores["entry"] == eb, "dataset"]))
            for dataset in shared:
                x, _, _ = score_matrix(report.scores, ea, [dataset])
                y, _, _ = score_matrix(report.scores, eb, [dataset])
                if np.isnan(x).any() or np.isnan(y).any():
                    continue
                p, lo, hi = stats.probability_of_improvement_interval(x, y, reps=REPS)
                ra, rb = (report.scores[(report.scores["entry"] == e) & (report.scores["dataset"] == dataset)]
                          for e in (ea, eb))
                diff = paired(ra, rb, "score")
                ca, cb = (entry_cohorts(report.scores, e, [dataset])[dataset] for e in (ea, eb))
                rows.append({"dataset": dataset, "A": ea, "B": eb, "protocol": "same" if ca == cb else
                             "NOT THE SAME: " + cohort_difference(ca, cb),
                             "A score": f"{x.mean():.1f} ± {x.std(ddof=1) if len(x) > 1 else float('nan'):.1f} ({len(x)})",
                             "B score": f"{y.mean():.1f} ± {y.std(ddof=1) if len(y) > 1 else float('nan'):.1f} ({len(y)})",
                             "A − B": f"{x.mean() - y.mean():+.1f}",
                             "A − B, paired by seed [95% CI]": f"{diff.text(1)} ({diff.seeds}), {verdict(diff)}"
                             if diff.seeds else "no seed in common",
                             "P(A > B) [95% CI]": f"{p:.2f} [{lo:.2f}, {hi:.2f}]"})
    return pd.DataFrame(rows)


HEADLINE = ("<!-- headline:start -->", "<!-- headline:end -->")


def headline(report: Report, metric: str = "IQM", top: int = 3, command: str = "") -> str:
    """The README's headline: per domain, its board's `top` entries by `metric` (more where they share the last
    shown rank), with intervals, seeds and cost, made from the store like the leaderboard it summarises. Where a
    dataset's board ranks more entries than its domain's (entries that ran one dataset of the domain only), the
    domain's datasets are shown board by board instead, so that a half-run domain is not summed up by its few
    complete entries."""
    where = report.per_dataset.drop_duplicates("dataset").set_index("dataset")["domain"]
    ranked = [(title, datasets, board) for title, datasets, _, board in ranked_boards(report, metric)
              if not title.startswith(EVERY)]  # domains do not share a score scale
    rows = []
    for name in sorted(set(where)):
        mine = [(t, b) for t, d, b in ranked if {where[x] for x in d} == {name} and not b.empty]
        whole = [(t, b) for t, b in mine if t.split(",")[0] == name]
        single = [(t, b) for t, b in mine if t.split(",")[0] != name]
        best = max((len(b) for _, b in whole), default=0)
        for title, board in whole if best >= max((len(b) for _, b in single), default=0) else single:
            ranks = [rank_value(r) for r in board["rank"]]
            cut = ranks[min(top, len(ranks)) - 1]
            rows += [{"board": title, "datasets": row["datasets"], "rank": f"{row['rank']} of {len(board)}",
                      "entry": row["entry"], metric: row[metric], "seeds": row["seeds"],
                      "NFE per action": row["NFE per action"], "core-minutes per run": row["core-minutes per run"]}
                     for r, (_, row) in zip(ranks, board.iterrows()) if r <= cut]
    meta = provenance(report.scores)
    lines = [HEADLINE[0],
             f"Generated by `{command}` from the results store; do not edit by hand. Per domain, the top {top} "
             f"entries by {metric} over the domain's datasets, or over each of its datasets where more entries ran "
             "one of them than all (95% stratified-bootstrap CI; rank as in the leaderboard: entries whose intervals "
             "overlap share it). Code: " + ", ".join(meta["code_versions"]) + ".", "",
             markdown_table(pd.DataFrame(rows)) if rows else "(no domain has a ranked entry yet)", HEADLINE[1]]
    return "\n".join(lines)


def headline_block(readme: Path) -> tuple[str, int, int]:
    """`readme`'s text and where its headline markers sit; no block is one error that says how to add it."""
    text = readme.read_text()
    start, end = text.find(HEADLINE[0]), text.find(HEADLINE[1])
    if start < 0 or end < start:
        raise ConfigError(f"{readme} has no headline block: add the two lines {HEADLINE[0]} and {HEADLINE[1]} "
                          "where the table should go, then run this again")
    return text, start, end


def write_headline(report: Report, readme: Path, metric: str, command: str, top: int = 3) -> Path:
    """Replace the block between the headline markers in `readme` (nothing else in the file changes)."""
    text, start, end = headline_block(readme)
    readme.write_text(text[:start] + headline(report, metric, top, command) + text[end + len(HEADLINE[1]):])
    return readme
