"""Writes a `bench.reports.report.Report` as Markdown, self-contained HTML, LaTeX and CSV, with its figures.

Markdown links the PNGs beside it; the HTML embeds every figure as inline SVG, so the one file opens
in a browser with no server and nothing else next to it.
"""

from __future__ import annotations

import html
import io
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from bench.reports.report import Report, provenance
from policies.errors import ConfigError

FORMATS = ("md", "html", "csv", "tex")
REFERENCE_ENTRY = "behaviour data (reference)"


def fmt(v: float, digits: int = 1) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"


def _score_cell(r: pd.Series) -> str:
    spread = f" ± {fmt(r['std'])}" if pd.notna(r["std"]) else ""
    ci = f" [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]" if pd.notna(r["ci_low"]) else ""
    return f"{fmt(r['mean'])}{spread}{ci}"


def tables(report: Report) -> dict[str, pd.DataFrame]:
    """The report's tables with display columns, in the order they appear."""
    out: dict[str, pd.DataFrame] = {}
    pd_ = report.per_dataset
    choice = {"none": "; fixed scale", "held-out": "; scale chosen on held-out episodes",
              "reported-episodes": "; scale chosen on the reported episodes (optimistic)"}
    per = pd.DataFrame({
        "dataset": pd_["dataset"], "entry": pd_["entry"], "score": pd_.apply(_score_cell, axis=1),
        "seeds": pd_["seeds"], "episodes": pd_["episodes"],
        "protocol": "last checkpoint" + pd_["selection"].map(choice).where(pd_["guidance_scale"].notna(), "")})
    ref = report.data_reference
    if not ref.empty:  # each dataset's own score first among its rows: a reference, not an entry
        per = pd.concat([pd.DataFrame({"dataset": ref["dataset"], "entry": REFERENCE_ENTRY, "score": ref["score"].map(fmt),
                                       "seeds": "", "episodes": "", "protocol": "reference: " + ref["how"]}), per])
        per = per.sort_values("dataset", kind="stable")
    out["Per dataset: normalised score, mean ± std over seeds [95% CI]"] = per
    dom = report.per_domain.pivot(index="entry", columns="domain", values="mean")
    dom.columns.name = None
    out["Averages of the per-dataset means, by domain"] = dom.map(fmt).reset_index()
    if not report.aggregates.empty:
        agg = report.aggregates
        cell = agg.apply(lambda r: f"{fmt(r['estimate'])} [{fmt(r['lower'])}, {fmt(r['upper'])}]", axis=1)
        wide = agg.assign(cell=cell).pivot(index="entry", columns="metric", values="cell")
        wide = wide[[m for m in ("IQM", "mean", "median", "optimality gap") if m in wide.columns]]
        counts = agg.groupby("entry")[["datasets", "seeds"]].first()
        out["Aggregates across datasets (95% stratified-bootstrap CI)"] = wide.join(counts).reset_index()
    if not report.improvement.empty:
        imp = report.improvement
        out["Probability of improvement P(X > Y) on shared datasets"] = pd.DataFrame({
            "X": imp["x"], "Y": imp["y"],
            "P(X > Y) [95% CI]": imp.apply(lambda r: f"{r['p_x_better']:.2f} [{r['lower']:.2f}, {r['upper']:.2f}]", axis=1),
            "datasets": imp["datasets"]})
    c = report.cost
    out["Score versus cost per dataset (medians over runs)"] = pd.DataFrame({
        "dataset": c["dataset"], "entry": c["entry"], "mean score": c["score"].map(fmt),
        "NFE per action": c["nfe_per_action"].map(lambda v: fmt(v, 0)),
        "energy gradients per action": c["energy_grads_per_action"].map(lambda v: fmt(v, 0)),
        "training (min)": c["train_minutes"].map(fmt), "core-minutes": c["core_minutes"].map(fmt),
        "gradient steps": c["gradient_steps"].map(lambda v: fmt(v, 0)),
        "actions/s (during the sweep)": c["actions_per_second"].map(lambda v: fmt(v, 0))})
    if not report.budget.empty:
        b = report.budget
        out["Budget per entry (from its runs' configs)"] = pd.DataFrame({
            "entry": b["entry"], "steps": b["steps"], "batch": b["batch"], "widths": b["widths"],
            "NFE per action": b["nfe_per_action"].map(lambda v: fmt(v, 0)), "core-minutes per run": b["core_minutes"].map(fmt),
            "runs": b["runs"], "code": b["code"]})
    seeds = report.scores.sort_values(["dataset", "entry", "seed"])
    out["Per seed"] = pd.DataFrame({"dataset": seeds["dataset"], "entry": seeds["entry"], "seed": seeds["seed"],
                                    "score": seeds["score"].map(fmt), "run": seeds["run_id"], "code": seeds["code_version"]})
    if not report.sharing.empty:
        sh = report.sharing
        out["Shared stages: the sweep's training beside each run alone"] = pd.DataFrame({
            "dataset": sh["dataset"], "preset": sh["preset"], "seed": sh["seed"], "algorithms": sh["algorithms"],
            "stages shared": sh["shared"], "alone (h)": sh["alone_hours"].map(lambda v: fmt(v, 2)),
            "sweep (h)": sh["sweep_hours"].map(lambda v: fmt(v, 2)), "saving": sh["saving"].map(lambda v: f"{v:.2f}×")})
    if not report.plateau.empty:
        pl = report.plateau
        out["Learning curves: the last two points on the curve's own episodes (means over seeds) against the seeds' "
            "spread there"] = pd.DataFrame({
            "dataset": pl["dataset"], "entry": pl["entry"], "stage": pl["stage"], "steps": pl["steps"],
            "second to last": pl["before_last"].map(fmt), "last": pl["last"].map(fmt),
            "change": pl["change"].map(fmt), "seeds' spread": pl["seed_spread"].map(fmt),
            "flattened": pl["flat"].map({True: "yes", False: "no", None: "—"})})
    if not report.gains.empty:
        out["Over diffusion BC: each method built on QGPO's behaviour model against that model sampled alone (s = 0), "
            "paired seed by seed (unpaired where a seed's two models were trained apart)"] = \
            report.gains.drop(columns=["mean", "low", "high"])
    if not report.start_gains.empty:
        out["Over each run's own start: a fine-tuner against the chain it started from, on the same final episodes, "
            "paired seed by seed"] = report.start_gains.drop(columns=["mean", "low", "high"])
    if not report.critic.empty:
        out["Critic check: each critic's Q on dataset actions, and its policy's gap over them"] = critic_frame(report.critic)
    if not report.guidance.empty:
        gu = report.guidance
        out["Guidance check: what the CEP target left f_phi to learn (means over runs)"] = pd.DataFrame({
            "dataset": gu["dataset"], "entry": gu["entry"], "runs": gu["runs"], "M": gu["support_m"], "beta": gu["beta"],
            "beta Q_0 spread over the support (median)": gu["beta_q_spread_median"].map(lambda v: fmt(v, 2)),
            "target entropy": gu["target_entropy"].map(lambda v: fmt(v, 3)), "log M": gu["log_m"].map(lambda v: fmt(v, 3)),
            "f_phi final loss": gu["energy_loss"].map(lambda v: fmt(v, 3)),
            "learned (0: nothing, 1: the target)": gu["learned"].map(lambda v: fmt(v, 2)),
            "runs with a near-uniform target": gu["near_uniform"],
            "near t = 0: f_phi's rank correlation with beta Q_0 over the support": [
                "—" if pd.isna(c) else f"{fmt(c, 2)} (t = {t:g})" for c, t in zip(gu["rank_correlation"], gu["fit_t"])],
            "near t = 0: spread of f_phi / of beta Q_0": [
                "—" if pd.isna(a) else f"{fmt(a, 2)} / {fmt(b, 2)}" for a, b in zip(gu["f_spread"], gu["beta_q_spread"])]})
    if not report.reference.empty:
        ref = report.reference
        out["Published numbers on the same datasets, under the same protocol"] = pd.DataFrame({
            "dataset": ref["dataset"], "algorithm": ref["algorithm"], "published": ref["score"].map(fmt),
            "ours (same protocol)": ref["ours"],
            "protocol": "checkpoint " + ref["checkpoint"] + ", " + ref["episodes"] + " episodes, scale " + ref["scale_selection"],
            "source": ref["source"] + ", " + ref["table"].astype(str), "dataset version": ref["dataset_version"]})
    return out


def critic_frame(cr: pd.DataFrame) -> pd.DataFrame:
    """The runs' critic checks (`bench.reports.critic.critic_checks`) as a table's cells."""
    return pd.DataFrame({
        "dataset": cr["dataset"], "entry": cr["entry"], "runs": cr["runs"], "Q_0 (mean)": cr["q_data_mean"].map(fmt),
        "the rewards allow": [f"[{lo:.4g}, {hi:.4g}]" for lo, hi in zip(cr["low"], cr["high"])],
        "data's discounted return": cr["mc_return_mean"].map(fmt),
        "correlation with it": cr["mc_correlation"].map(lambda v: fmt(v, 2)),
        "runs outside (diverged)": cr["outside"], "returns over": cr["returns"],
        "Q(s, π(s)) − Q(s, a_data)": cr["policy_gap"].map(fmt),
        "Q_0 along training (first → middle → last check)": cr["course"],
        "first left the range": cr["left_range"]})


def study_page(title: str, command: str, code: str, hardware: str, preamble: str) -> list[str]:
    """The opening lines of a study's Markdown page (results/budgets.md, critics.md): what made it, where, and how
    to read it."""
    return [f"# {title}", "", f"Made by `{command}` at {code} on {hardware}.", "", preamble, ""]


def write_page(out: Path, lines: list[str], empty: str | None = None) -> Path:
    """Write a study page; `empty`: the line that stands for its tables when there is nothing to show."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines + ([empty] if empty else [])) + "\n")
    return out


def claims_table(table: pd.DataFrame, unmeasured: str = "—") -> str:
    """A table of claims (check, ..., holds: True, False or None) as Markdown, `holds?` read yes / no / `unmeasured`."""
    held = table["holds"].map(lambda v: {True: "yes", False: "no"}.get(v, unmeasured))
    return markdown_table(table.assign(holds=held).rename(columns={"holds": "holds?"}))


def markdown_table(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    lines = [head, "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _figures(report: Report) -> dict[str, Callable]:
    from bench.reports import plots
    from bench.reports.report import score_matrix, without_cells

    figs: dict[str, Callable] = {}
    if not report.aggregates.empty:
        figs["aggregates"] = lambda: plots.aggregate_intervals(report.aggregates)
        entries = sorted(report.aggregates["entry"].unique())
        # over the datasets the aggregates read: a cell short of competence on its family or still filling is left
        # out, as there
        scores = without_cells(report.scores, report.short_cells | report.filling_cells)
        figs["profiles"] = lambda: plots.performance_profiles({e: score_matrix(scores, e)[0] for e in entries})
    if not report.curves.empty:
        figs["curves"] = lambda: plots.learning_curves(report.curves)
    if not report.cost.empty:
        figs["cost"] = lambda: plots.score_vs_cost(report.cost)
    return figs


CAPTIONS = {"aggregates": "Aggregate metrics with 95% stratified-bootstrap intervals",
            "profiles": "Performance profiles (fraction of runs above each score)",
            "curves": "Learning curves against the policy's own training steps and against training CPU-minutes "
                      "(band: 95% interval over seeds; the line: the curve's own episodes; ringed, apart: the final "
                      "evaluation, on its own episodes)",
            "cost": "Score versus cost"}


def check_formats(formats: tuple[str, ...]) -> None:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"unknown report format(s) {', '.join(unknown) or '(none given)'}; "
                          f"choose from {', '.join(FORMATS)}")


def write(report: Report, out: Path, formats: tuple[str, ...] = FORMATS, title: str = "diffbench report",
          command: str = "") -> list[Path]:
    """Write the report in each format under `out`; returns the files written."""
    check_formats(formats)
    out.mkdir(parents=True, exist_ok=True)
    import matplotlib.pyplot as plt

    written: list[Path] = []
    svgs: dict[str, str] = {}
    for name, make in _figures(report).items():
        fig = make()
        if "md" in formats:
            for ext in ("png", "svg"):
                path = out / f"{name}.{ext}"
                fig.savefig(path, dpi=120)
                written.append(path)
        buf = io.StringIO()
        fig.savefig(buf, format="svg")
        svgs[name] = buf.getvalue()[buf.getvalue().index("<svg"):]
        plt.close(fig)
    tabs = tables(report)
    meta = provenance(report.scores)
    header = [f"Made by `{command}`." if command else "",
              "Code: " + ", ".join(meta["code_versions"]) + "; hardware: " + "; ".join(meta["hardware"])]
    if "md" in formats:
        parts = [f"# {title}", *header, "## Protocol", "\n".join(f"- {p}" for p in report.protocol)]
        for name, df in tabs.items():
            parts += [f"## {name}", markdown_table(df)]
        if report.notes:
            parts += ["## Notes", "\n".join(f"- {n}" for n in report.notes)]
        for name in svgs:
            parts += [f"## {CAPTIONS[name]}", f"![{CAPTIONS[name]}]({name}.png)"]
        path = out / "report.md"
        path.write_text("\n\n".join(p for p in parts if p) + "\n")
        written.append(path)
    if "html" in formats:
        path = out / "report.html"
        path.write_text(html_page(title, header, report, tabs, svgs))
        written.append(path)
    if "csv" in formats:
        for name, df in {"per_dataset": report.per_dataset, "per_domain": report.per_domain,
                         "aggregates": report.aggregates, "improvement": report.improvement,
                         "curves": report.curves, "cost": report.cost, "runs": report.scores.drop(columns=["config"]),
                         "reference": report.reference, "critic": report.critic, "guidance": report.guidance,
                         "gains": report.gains, "start_gains": report.start_gains, "plateau": report.plateau,
                         "data_reference": report.data_reference}.items():
            path = out / f"{name}.csv"
            df.to_csv(path, index=False)
            written.append(path)
    if "tex" in formats:
        path = out / "report.tex"
        path.write_text("\n\n".join(_latex(name, df) for name, df in tabs.items()) + "\n")
        written.append(path)
    return written


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "★": r"$\star$",
          "—": "--", "−": "$-$"}
_LATEX_SPECIAL = re.compile("|".join(re.escape(k) for k in _LATEX))


def _latex(caption: str, df: pd.DataFrame) -> str:
    """A booktabs table with LaTeX's special characters escaped."""
    def esc(v: object) -> str:
        return _LATEX_SPECIAL.sub(lambda m: _LATEX[m.group()], str(v))

    cols = "l" * len(df.columns)
    rows = [" & ".join(esc(c) for c in df.columns) + r" \\", r"\midrule"]
    rows += [" & ".join(esc(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    return "\n".join([r"\begin{table}[t]", r"\centering", rf"\caption{{{esc(caption)}}}", rf"\begin{{tabular}}{{{cols}}}",
                      r"\toprule", *rows, r"\bottomrule", r"\end{tabular}", r"\end{table}"])


def html_page(title: str, header: list[str], report: Report, tabs: dict[str, pd.DataFrame],
              svgs: dict[str, str] | None = None) -> str:
    """One self-contained page: header lines, protocol, tables, notes, then inline-SVG figures."""
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:4px 8px;"
             "text-align:left !important;font-size:14px}th{background:#f3f3f3}figure{margin:1em 0}"
             "svg{max-width:100%;height:auto}")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(h).replace('`', '')}</p>" for h in header if h]
    parts.append("<h2>Protocol</h2><ul>" + "".join(f"<li>{html.escape(p)}</li>" for p in report.protocol) + "</ul>")
    for name, df in tabs.items():
        parts.append(f"<h2>{html.escape(name)}</h2>" + df.to_html(index=False, escape=True, border=0))
    if report.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes) + "</ul>")
    for name, svg in (svgs or {}).items():
        parts.append(f"<h2>{html.escape(CAPTIONS[name])}</h2><figure>{svg}</figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
