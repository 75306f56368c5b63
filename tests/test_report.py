"""Reports, the leaderboard and compare, from a store filled with runs whose scores are known."""

from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.reports.leaderboard import compare, ranking, write_leaderboard
from bench.reports.report import build, domain
from bench.harness.store import ResultsStore, RunResult
from policies import registry

D4RL = "hopper-medium-v2"
GEN = "diffbench/pointmaze/umaze-v0"
# (algorithm, dataset) -> {guidance scale or None: score of seed 0, 1, 2}
SCORES = {
    ("qgpo", D4RL): {0.0: [40, 50, 60], 1.0: [70, 80, 90]},
    ("qgpo", GEN): {0.0: [20, 30, 40], 1.0: [35, 45, 55]},
    ("bc", D4RL): {None: [45, 50, 55]},
    ("bc", GEN): {None: [10, 20, 30]},
}

SELECTED = {0: 1.0, 1: 1.0, 2: 0.0}  # the scale each qgpo seed chose on its held-out episodes


def run_result(algo: str, dataset: str, seed: int) -> RunResult:
    final, evaluations = [], []
    for scale, per_seed in SCORES[(algo, dataset)].items():
        variant = "default" if scale is None else f"guidance_scale={scale:g}"
        centre = per_seed[seed]
        final += [{"variant": variant, "guidance_scale": scale, "episode": i, "return": float(centre + d),
                   "length": 100, "score": float(centre + d)} for i, d in enumerate((-1.0, 0.0, 1.0))]
        evaluations.append({"stage": "final", "step": 10, "gradient_steps": 10, "variant": variant,
                            "guidance_scale": scale, "episodes": 3, "actions_per_second": 500.0})
    evaluations.append({"stage": "energy" if algo == "qgpo" else "policy", "step": 5, "gradient_steps": 5,
                        "variant": "default", "episodes": 3, "score_mean": 10.0 * seed})
    return RunResult(run_id=f"{algo}-{dataset}-{seed}", algorithm=algo, dataset=dataset, seed=seed, preset="cpu",
                     config={"seed": seed, "lr": 1e-3}, code_version="abc123", hardware={"description": "test CPU"},
                     selected_guidance_scale=SELECTED[seed] if algo == "qgpo" else None,
                     started=0.0, finished=90.0, stage_seconds={"a": 30.0, "b": 30.0}, gradient_steps=10,
                     nfe_per_action=15 if algo == "qgpo" else 1, evaluations=evaluations, final=final)


@pytest.fixture
def store(tmp_path):
    s = ResultsStore(tmp_path / "store")
    for algo, dataset in SCORES:
        for seed in range(3):
            s.record(run_result(algo, dataset, seed))
    s.record(RunResult(run_id="broken", algorithm="bc", dataset=D4RL, seed=9, preset="cpu", config={}, status="failed",
                       error="Traceback: boom"))
    return s


@pytest.fixture
def reference(tmp_path):
    d = tmp_path / "reference"
    d.mkdir()
    (d / "papers.csv").write_text(
        "# a comment line\nalgorithm,dataset,score,source,table,dataset_version,checkpoint,episodes,scale_selection\n"
        "QGPO,hopper-medium-v2,98.0,Lu et al. 2023,Table 1,D4RL v2,last,3,reported-episodes\n"
        "IQL,hopper-medium-v2,66.3,Kostrikov et al. 2022,Table 1,D4RL v2,last,10,none\n"
        "QGPO,antmaze-umaze-v0,96.4,Lu et al. 2023,Table 1,D4RL v0,last,100,reported-episodes\n")
    return d


def test_tables_hold_the_known_means_and_both_scale_choices(store, reference):
    report = build(store, reference)
    per = report.per_dataset.set_index(["dataset", "entry"])
    assert per.loc[(D4RL, "qgpo[cpu] s=1"), "mean"] == pytest.approx(80.0)
    assert per.loc[(D4RL, "qgpo[cpu] s=1"), "std"] == pytest.approx(10.0)
    # held out: seeds 0 and 1 chose s=1 (70, 80), seed 2 chose s=0 (60); best on reported: s=1 for every seed
    assert per.loc[(D4RL, "qgpo[cpu] s=held-out choice"), "mean"] == pytest.approx(70.0)
    assert per.loc[(GEN, "qgpo[cpu] s=held-out choice"), "mean"] == pytest.approx((35 + 45 + 40) / 3)
    assert per.loc[(D4RL, "qgpo[cpu] s=best on reported episodes"), "mean"] == pytest.approx(80.0)
    assert per.loc[(D4RL, "qgpo[cpu] s=held-out choice"), "selection"] == "held-out"
    assert per.loc[(GEN, "bc[cpu]"), "mean"] == pytest.approx(20.0) and per.loc[(GEN, "bc[cpu]"), "seeds"] == 3
    low, high = per.loc[(D4RL, "qgpo[cpu] s=1"), ["ci_low", "ci_high"]]
    assert 70 <= low < 80 < high <= 90
    overall = report.per_domain.set_index(["domain", "entry"])["mean"]
    assert overall[("overall", "qgpo[cpu] s=1")] == pytest.approx((80 + 45) / 2)
    assert overall[("pointmaze (generated)", "bc[cpu]")] == pytest.approx(20.0)
    agg = report.aggregates.set_index(["entry", "metric"])["estimate"]
    assert agg[("bc[cpu]", "mean")] == pytest.approx(35.0) and agg[("bc[cpu]", "optimality gap")] == pytest.approx(65.0)
    # IQM of bc's 6 seed scores 10 20 30 45 50 55: cut 1 from each end -> 20 30 45 50
    assert agg[("bc[cpu]", "IQM")] == pytest.approx(36.25)
    pair = report.improvement.set_index(["x", "y"]).loc[("qgpo[cpu] s=0 (diffusion BC)", "qgpo[cpu] s=1")]
    # D4RL: 40 50 60 vs 70 80 90 -> 0; GEN: 20 30 40 vs 35 45 55 -> 3/9 wins (40 > 35)... mean of the two
    assert pair["p_x_better"] == pytest.approx((0 + 1 / 9) / 2)
    # antmaze-umaze-v0 was not run here; IQL's 10-episode number matches no run of 3 episodes
    assert report.reference["algorithm"].tolist() == ["QGPO"]
    assert report.reference["ours"].tolist() == ["qgpo[cpu] s=best on reported episodes: 80.0"]
    assert any("published IQL on hopper-medium-v2 (66.3) is not shown" in n for n in report.notes)
    assert any("rewards during training" in p for p in report.protocol)
    assert any("generated datasets (diffbench/pointmaze/umaze-v0)" in n for n in report.notes)
    cost = report.cost.set_index(["dataset", "entry"])  # per dataset: never a mean over different sets of datasets
    assert cost.loc[(GEN, "qgpo[cpu] s=1"), "energy_grads_per_action"] == 15
    assert cost.loc[(D4RL, "qgpo[cpu] s=0 (diffusion BC)"), "energy_grads_per_action"] == 0
    assert cost.loc[(GEN, "bc[cpu]"), "score"] == 20 and cost.loc[(D4RL, "bc[cpu]"), "score"] == 50
    assert cost.loc[(GEN, "bc[cpu]"), "core_minutes"] == 1.0  # 60 s of stages on one thread
    budget = report.budget.set_index("entry")
    assert budget.loc["bc[cpu]", "runs"] == 6 and budget.loc["bc[cpu]", "code"] == "abc123"


def test_report_command_writes_every_format_with_embedded_figures(capsys, store, reference, tmp_path):
    out = tmp_path / "report"
    code = main(["report", "--results", str(store.path.parent), "--out", str(out), "--reference", str(reference)])
    assert code == 0, capsys.readouterr()
    md = (out / "report.md").read_text()
    assert f"| {D4RL} | qgpo[cpu] s=1 | 80.0 ± 10.0 [" in md
    assert ("| QGPO | 98.0 | qgpo[cpu] s=best on reported episodes: 80.0 | checkpoint last, 3 episodes, scale "
            "reported-episodes | Lu et al. 2023, Table 1 | D4RL v2 |") in md.replace(f"| {D4RL} ", "")
    html = (out / "report.html").read_text()
    assert html.count("<svg") == 4 and "<img" not in html and "src=" not in html  # nothing outside the file
    assert "80.0 ± 10.0" in html
    tex = (out / "report.tex").read_text()
    assert r"\begin{tabular}" in tex and r"qgpo[cpu] s=1" in tex and r"80.0 $\pm$ 10.0" in tex
    assert "diffbench/pointmaze/umaze-v0" in tex and r"hopper-medium-v2" in tex
    assert {p.name for p in out.glob("*.png")} == {"aggregates.png", "profiles.png", "curves.png", "cost.png"}
    assert "run_id" in (out / "runs.csv").read_text().splitlines()[0]


def test_leaderboard_ranks_by_the_chosen_metric_and_compare_pairs_datasets(capsys, store, tmp_path):
    report = build(store)
    iqm = ranking(report, "IQM")
    # s=1 is every seed's best scale on the reported episodes: one row, not two; the held-out choice differs (seed 2)
    top = "qgpo[cpu] s=1 (= s=best on reported episodes)"
    assert iqm["entry"].tolist()[0] == top and len(iqm) == 4
    # a rank is 1 + the entries whose interval lies wholly above: s=1 and the held-out choice overlap (=1), and both
    # lie above s=0 and bc, which overlap each other (=3)
    assert iqm["rank"].tolist() == ["=1", "=1", "=3", "=3"], iqm
    assert iqm.set_index("entry").loc["bc[cpu]", "NFE per action"] == "1"  # the budget beside every ranked row
    assert iqm.set_index("entry").loc["bc[cpu]", "core-minutes per run"] == "1.0"
    gap = ranking(report, "optimality gap")
    assert gap["entry"].tolist()[0] == top  # smallest gap first
    out = tmp_path / "LEADERBOARD.md"
    assert main(["leaderboard", "--results", str(store.path.parent), "--out", str(out)]) == 0
    board = out.read_text()
    assert board.index("qgpo[cpu] s=1") < board.index("bc[cpu]") and "do not edit by hand" in board
    assert out.with_suffix(".html").exists()
    # without --out it writes beside the store, never over the committed results/LEADERBOARD.md
    committed = Path("results/LEADERBOARD.md")
    before = committed.read_bytes() if committed.exists() else None
    assert main(["leaderboard", "--results", str(store.path.parent)]) == 0
    assert (store.path.parent / "LEADERBOARD.md").exists()
    assert (committed.read_bytes() if committed.exists() else None) == before
    table = compare(report, "bc", "qgpo[cpu] s=1").set_index("dataset")
    assert table.loc[D4RL, "A − B"] == "-30.0" and table.loc[GEN, "A score"] == "20.0 ± 10.0 (3)"
    # seed by seed: -25, -30, -35; their mean with t(2) = 4.30 times 5 / sqrt(3) either side
    assert table.loc[D4RL, "A − B, paired by seed [95% CI]"] == "-30.0 [-42.4, -17.6] (3), worse"
    capsys.readouterr()
    assert main(["compare", "bc", "nothing-such", "--results", str(store.path.parent)]) == 2
    assert "nothing in the store is called 'nothing-such'" in capsys.readouterr().err


def test_an_empty_or_missing_store_says_so_without_a_traceback(capsys, tmp_path):
    ResultsStore(tmp_path / "empty")
    assert main(["report", "--results", str(tmp_path / "empty")]) == 1
    out, err = capsys.readouterr()
    assert "nothing to report" in out and "Traceback" not in out + err
    assert main(["leaderboard", "--results", str(tmp_path / "empty"), "--out", str(tmp_path / "lb.md")]) == 1
    assert main(["report", "--results", str(tmp_path / "nowhere")]) == 2
    assert "no results store in" in capsys.readouterr().err


def test_a_report_or_leaderboard_that_cannot_be_written_is_one_clear_error(capsys, store, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for argv in (["report", "--out", str(blocker / "report")], ["leaderboard", "--out", str(blocker / "LB.md")]):
        assert main([*argv, "--results", str(store.path.parent)]) == 2
        err = capsys.readouterr().err
        assert f"cannot write to {blocker}" in err and "choose a writable --out" in err and "Traceback" not in err


def test_a_bad_reference_table_is_one_clear_error(capsys, store, tmp_path):
    d = tmp_path / "badref"
    d.mkdir()
    (d / "x.csv").write_text("algorithm,dataset,score\nQGPO,hopper-medium-v2,high\n")
    assert main(["report", "--results", str(store.path.parent), "--reference", str(d)]) == 2
    assert "lacks column(s) source, table, dataset_version" in capsys.readouterr().err


def test_a_repeated_run_counts_once_and_the_report_says_which_it_kept(store):
    """The same algorithm, config, dataset and seed under a second run id (a copied dataset file, two stores
    merged) is not another seed."""
    import dataclasses

    again = dataclasses.replace(run_result("bc", D4RL, 0), run_id="bc-copy", finished=100.0)
    store.record(again)
    report = build(store)
    per = report.per_dataset.set_index(["dataset", "entry"])
    assert per.loc[(D4RL, "bc[cpu]"), "seeds"] == 3
    assert any("run bc-hopper-medium-v2-0 repeats run bc-copy" in n and "keeping bc-copy" in n for n in report.notes)


def test_domains():
    assert [domain(d) for d in ("hopper-medium-v2", "antmaze-large-play-v2", "D4RL/pointmaze/umaze-v2", GEN)] == [
        "locomotion", "antmaze", "pointmaze", "pointmaze (generated)"]


def test_latex_escapes_each_special_character_once():
    import pandas as pd

    from bench.reports.render import _latex

    tex = _latex("a_b", pd.DataFrame({"x": ["50% & {1} \\ #2 ± 3"]}))
    assert r"50\% \& \{1\} \textbackslash{} \#2 $\pm$ 3 \\" in tex and r"\caption{a\_b}" in tex


def test_entries_that_ran_on_other_datasets_are_never_ranked_against_each_other(store, tmp_path):
    for seed in range(3):  # iql on the D4RL dataset only, and scoring above everything there
        run = run_result("bc", D4RL, seed)
        run.run_id, run.algorithm = f"iql-{seed}", "iql"
        run.final = [{**row, "score": row["score"] + 50.0} for row in run.final]
        store.record(run)
    report = build(store)
    assert ranking(report, "IQM")["entry"].tolist()[-1] == "bc[cpu]"  # every dataset: iql is not on GEN
    assert "iql[cpu]" not in ranking(report, "IQM")["entry"].tolist()
    assert ranking(report, "IQM", [D4RL])["entry"].tolist()[0] == "iql[cpu]"
    out = tmp_path / "LEADERBOARD.md"
    assert main(["leaderboard", "--results", str(store.path.parent), "--out", str(out)]) == 0
    board = out.read_text()
    assert board.count("## Ranked by IQM over") == 3  # every dataset, then each of the two domains
    assert f"## Ranked by IQM over {domain(GEN)}" in board and f"## Ranked by IQM over {domain(D4RL)}" in board
    assert "Not ranked here, for want of a score on every dataset above: iql[cpu] (1 of 2)." in board


def test_one_setting_across_families_is_one_entry_but_two_protocols_on_one_dataset_are_two(tmp_path):
    s = ResultsStore(tmp_path / "store")
    protocols = {D4RL: {"episodes": 10, "reward_transform": "locomotion"}, GEN: {"episodes": 100, "reward_transform": "none"}}
    for dataset, protocol in protocols.items():
        for seed in range(3):
            run = run_result("bc", dataset, seed)
            run.config = {**run.config, "protocol": protocol}
            s.record(run)
    assert set(build(s).per_dataset["entry"]) == {"bc[cpu]"}  # the family's own settings do not part it
    for seed in range(3):  # the same dataset again, told to evaluate 50 episodes: another protocol
        run = run_result("bc", GEN, seed)
        run.run_id, run.config = f"bc-50-{seed}", {**run.config, "protocol": {"episodes": 50, "reward_transform": "none"}}
        s.record(run)
    entries = build(s).per_dataset.groupby("dataset")["entry"].nunique()
    assert entries[GEN] == 2 and entries[D4RL] == 1


def test_curve_settings_never_part_an_entry_and_a_remaining_tag_is_explained(tmp_path):
    """Issue 35: one algorithm became `#8343db` and `#011d75` when only eval_every and the curve episodes differed."""
    s = ResultsStore(tmp_path / "store")
    for seed in range(3):
        run = run_result("bc", GEN, seed)
        run.config = {**run.config, "protocol": {"episodes": 3, "eval_every": 500 * (seed == 0),
                                                 "curve_episodes": 10 if seed else 2, "curve_points": seed}}
        s.record(run)
    report = build(s)
    assert set(report.per_dataset["entry"]) == {"bc[cpu]"} and not any("differ in" in n for n in report.notes)
    for seed in range(3):  # another learning rate: two entries, and a note naming what parts them
        run = run_result("bc", GEN, seed)
        run.run_id, run.config = f"bc-lr-{seed}", {**run.config, "lr": 3e-4, "protocol": {"episodes": 3}}
        s.record(run)
    report = build(s)
    assert report.per_dataset["entry"].nunique() == 2
    note, = [n for n in report.notes if "differ in" in n]
    assert note.startswith("bc[cpu] is 2 entries, one per config; they differ in lr (") and "lr 0.0003" in note
    assert "lr 0.001" in note and "curve" not in note


def test_runs_of_other_presets_or_protocols_are_never_ranked_or_compared_together(tmp_path):
    """Issue 35: entries evaluated on 100 and on 50 episodes of one dataset were ranked side by side with a P(X > Y)."""
    from bench.reports.leaderboard import boards, write_leaderboard

    s = ResultsStore(tmp_path / "store")
    for algo, episodes in (("bc", 100), ("qgpo", 50)):
        for seed in range(3):
            run = run_result(algo, GEN, seed)
            run.config = {**run.config, "protocol": {"episodes": episodes, "eval_seed": 0, "reward_transform": "none"}}
            s.record(run)
    report = build(s)
    imp = report.improvement  # bc and qgpo share GEN only under different protocols; qgpo's scales one protocol
    assert not imp.empty and not (imp["x"].str.startswith("bc") | imp["y"].str.startswith("bc")).any()
    note, = [n for n in report.notes if n.startswith("not compared")]
    assert "episodes 100 vs 50" in note
    titles = [title for title, _, entries in boards(report) if entries]
    assert len(titles) == 2 and any("episodes 50" in t for t in titles) and any("episodes 100" in t for t in titles)
    write_leaderboard(report, tmp_path / "LEADERBOARD.md", "IQM", "test")
    board = (tmp_path / "LEADERBOARD.md").read_text()
    first, second = board.split("## Per dataset")[0].split("## Ranked by IQM")[1:3]
    assert ("bc[cpu]" in first) != ("bc[cpu]" in second) and ("qgpo[cpu]" in first) != ("qgpo[cpu]" in second)
    table = compare(report, "bc", "qgpo")
    assert (table["protocol"].str.startswith("NOT THE SAME: episodes 100 vs 50")).all()


def test_the_family_protocol_keys_are_keys_of_the_run_protocol():
    """The report's entries ignore these keys across families: they must be the ones `RunSpec` writes."""
    from bench.harness.runner import FAMILY_PROTOCOL, RunSpec

    spec = RunSpec(algorithm="bc", dataset="diffbench/ogbench/cube-single-play-small-v0", seed=0, preset="tiny")
    assert set(FAMILY_PROTOCOL) <= set(spec.protocol())


def test_the_critic_check_table_keeps_two_configs_of_one_algorithm_apart_as_the_score_tables_do(tmp_path):
    s = ResultsStore(tmp_path / "store")
    for beta, q in ((3.0, 50.0), (10.0, 900.0)):
        for seed in range(3):
            run = run_result("qgpo", D4RL, seed)
            run.run_id, run.config = f"qgpo-beta{beta}-{seed}", {**run.config, "beta": beta}
            run.diagnostics = {"critic": {"q_data_mean": q + seed, "value_bounds": [0.0, 500.0], "mc_return_mean": 40.0,
                                          "mc_correlation": 0.5, "outside_bounds": q > 500}}
            s.record(run)
    report = build(s)
    critic = report.critic.set_index("entry")
    assert set(critic.index) == set(report.scores["run_entry"]) and len(critic) == 2
    assert sorted(critic["q_data_mean"]) == [51.0, 901.0] and sorted(critic["outside"]) == [0, 3]
    assert (critic["runs"] == 3).all()


def curve_run(algo: str, seed: int, points: list[float], final: float, stage: str = "policy",
              ends_at: float | None = None) -> RunResult:
    """A run whose learning curve (every 10 steps of `stage`, 1 CPU-second a step) is `points`, then `final`; with
    `ends_at`, the curve's own point at the last step (its episodes, not the final evaluation's), as runs make now."""
    evaluations = [{"stage": stage, "step": 10 * (i + 1), "gradient_steps": 10 * (i + 1), "variant": "default",
                    "episodes": 2, "score_mean": p, "policy_stage": stage, "policy_step": 10 * (i + 1),
                    "cpu_seconds": 10.0 * (i + 1)} for i, p in enumerate(points + ([ends_at] if ends_at is not None else []))]
    end = 10 * (len(points) + 1)
    evaluations.append({"stage": "final", "step": end, "gradient_steps": end, "variant": "default", "episodes": 2,
                        "score_mean": final, "policy_stage": stage, "policy_step": end, "cpu_seconds": float(end)})
    return RunResult(run_id=f"{algo}-{seed}", algorithm=algo, dataset=GEN, seed=seed, preset="cpu", config={"seed": seed},
                     started=0.0, finished=1.0, gradient_steps=end, nfe_per_action=1, evaluations=evaluations,
                     final=[{"variant": "default", "guidance_scale": None, "episode": i, "return": final, "length": 10,
                             "score": final} for i in range(2)])


def test_curves_end_at_the_final_evaluation_and_say_whether_they_flattened(tmp_path):
    """Flatness is read on the curve's own episodes: the final evaluation, on other episodes, sits apart (here 10
    below the curve's end, as a set of easier curve episodes would put it) and is no change of the policy's."""
    s = ResultsStore(tmp_path / "store")
    for seed, shift in enumerate((-2.0, 0.0, 2.0)):
        s.record(curve_run("bc", seed, [10 + shift, 49 + shift], 40 + shift, ends_at=50 + shift))  # flat: +1, range 4
        s.record(curve_run("iql", seed, [10 + shift, 20 + shift, 30 + shift], 40 + shift))  # still rising: +10
    s.record(curve_run("td3bc", 0, [10.0, 20.0, 21.0], 21.0, ends_at=35.0))  # a run from before curves ended...
    s.record(curve_run("td3bc", 1, [12.0, 22.0, 22.0], 22.0))  # ...beside one that ends: the steps both have
    report = build(s)
    bc = report.curves[report.curves.entry == "bc[cpu]"].sort_values(["policy_step", "final"])
    assert bc.policy_step.tolist() == [10, 20, 30, 30] and bc["final"].tolist() == [False, False, False, True]
    assert bc["mean"].tolist() == pytest.approx([10, 49, 50, 40]) and bc.cpu_seconds.tolist() == [10, 20, 30, 30]
    assert (bc.seeds == 3).all() and (bc.lower <= bc["mean"]).all() and (bc["mean"] <= bc.upper).all()
    flat = report.plateau.set_index("entry")
    assert flat.loc["bc[cpu]", "flat"] and flat.loc["bc[cpu]", "change"] == pytest.approx(1.0)
    assert flat.loc["bc[cpu]", "last"] == pytest.approx(50.0) and flat.loc["bc[cpu]", "steps"] == 30
    assert not flat.loc["iql[cpu]", "flat"] and flat.loc["iql[cpu]", "seed_spread"] == pytest.approx(4.0)
    assert flat.loc["td3bc[cpu]", "steps"] == 30 and flat.loc["td3bc[cpu]", "change"] == pytest.approx(0.5)
    s.record(RunResult(**{**curve_run("bc", 3, [1.0], 2.0).__dict__, "run_id": "late", "finished": 2.0,
                          "diagnostics": {"dataset": {"data_score": 44.5, "how": "the collector on the eval env"}}}))
    written = main(["report", "--results", str(tmp_path / "store"), "--out", str(tmp_path / "out"), "--format", "md"])
    assert written == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert f"| {GEN} | behaviour data (reference) | 44.5 |  |  | reference: the collector on the eval env |" in text
    assert "| diffbench/pointmaze/umaze-v0 | iql[cpu] | policy | 30 | 20.0 | 30.0 | 10.0 | 4.0 | no |" in text
    assert (tmp_path / "out" / "curves.png").exists()


def test_a_curve_through_two_stages_judges_flatness_on_the_stage_that_made_the_policy(tmp_path):
    """DxMI's curve runs through imitation (its own steps 10-30, falling to 5 at the end), then fine-tuning (10-30,
    flat near 20): each stage is its own line, and the plateau reads the fine-tuning one."""
    s = ResultsStore(tmp_path / "store")
    for seed in range(3):
        run = curve_run("dxmi", seed, [19.0, 20.0, 20.5], 20.0, stage="finetune", ends_at=20.5)
        imitation = [{"stage": "imitation", "step": k, "gradient_steps": k, "variant": "default", "episodes": 2,
                      "score_mean": p, "policy_stage": "imitation", "policy_step": k, "cpu_seconds": k / 100}
                     for k, p in ((10, 30.0), (20, 15.0), (30, 5.0))]
        s.record(RunResult(**{**run.__dict__, "evaluations": imitation + run.evaluations}))
    report = build(s)
    curves = report.curves
    assert set(curves[curves.policy_stage == "imitation"]["last_stage"]) == {False}
    assert set(curves[curves.policy_stage == "finetune"]["last_stage"]) == {True}
    flat = report.plateau.set_index("entry").loc["dxmi[cpu]"]
    assert flat["stage"] == "finetune" and flat["flat"] and flat["last"] == pytest.approx(20.5)


def test_two_generations_of_one_dataset_id_are_two_datasets_in_the_report(tmp_path, monkeypatch, capsys):
    """Issue 35: UMaze regenerated under another mujoco held other bytes and its runs were ranked as the same dataset.
    Two generations (here: another collection seed, the card recording another simulator version) are kept apart,
    and `datasets verify --against` says which the local copy is."""
    from envs import catalog, pointmaze

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    name, results = "diffbench/pointmaze/umaze-small-v0", tmp_path / "results"
    run = ["run", "bc", name, "--preset", "tiny", "device=cpu", "--episodes", "2", "--results", str(results),
           "--no-progress"]
    catalog.generate(name, steps=400, seed=0, ref_episodes=2, progress=False)
    first = catalog.fingerprint(name)
    assert main(run) == 0
    assert main(["datasets", "verify", name, "--no-env", "--against", str(results)]) == 0
    assert "same content as the 1 run" in capsys.readouterr().out
    real = pointmaze.md.version
    monkeypatch.setattr(pointmaze.md, "version", lambda p: "0.0-other" if p == "mujoco" else real(p))
    catalog.generate(name, steps=400, seed=1, ref_episodes=2, progress=False, overwrite=True)
    assert catalog.fingerprint(name) != first
    assert main(run) == 0
    capsys.readouterr()
    assert main(["datasets", "verify", name, "--no-env", "--against", str(results)]) == 1  # only one of the two
    out = capsys.readouterr().out
    assert f"other content ({first}) than this copy" in out and "1 run" in out
    report = build(ResultsStore(results))
    datasets = sorted(report.per_dataset["dataset"])
    assert datasets == sorted(f"{name} @{fp}" for fp in (first, catalog.fingerprint(name)))
    assert any("2 different contents" in n for n in report.notes)


def test_of_two_contents_of_one_dataset_id_the_board_takes_the_one_most_algorithms_ran(tmp_path):
    """Two contents of one dataset id, never pooled: bc ran both, qgpo one. The domain's board takes the content both
    ran (ranking both), the other content is a board of its own; a legacy content (recorded none) never leads."""
    from bench.reports.leaderboard import boards

    s = ResultsStore(tmp_path / "store")
    for algo, content in (("bc", "aaa"), ("bc", "bbb"), ("qgpo", "aaa"), ("iql", None), ("bc", None), ("td3bc", None)):
        for seed in range(3):
            run = run_result("bc" if algo in ("iql", "td3bc") else algo, GEN, seed)
            run.run_id, run.algorithm, run.dataset_content = f"{algo}-{content}-{seed}", algo, content
            s.record(run)
    got = {title.split(",")[0]: names for title, names, _ in boards(build(s))}
    assert got == {domain(GEN): [f"{GEN} @aaa"], f"{GEN} @bbb": [f"{GEN} @bbb"],
                   f"{GEN} @unrecorded": [f"{GEN} @unrecorded"]}


def test_a_dataset_one_entry_ran_ahead_onto_has_its_own_board_and_does_not_shrink_its_domains(tmp_path):
    """bc, qgpo and iql ran hopper; bc alone ran walker2d too (cheap runs finish first in a sweep): the locomotion
    board keeps hopper and its three algorithms, walker2d is a board of its own, until half of them have run it."""
    from bench.reports.leaderboard import EVERY, boards

    walker = "walker2d-medium-v2"
    s = ResultsStore(tmp_path / "store")
    for seed in range(3):
        for algo in ("bc", "qgpo"):
            s.record(run_result(algo, D4RL, seed))
        iql = run_result("bc", D4RL, seed)
        iql.run_id, iql.algorithm = f"iql-{seed}", "iql"
        s.record(iql)
        ahead = run_result("bc", D4RL, seed)
        ahead.run_id, ahead.dataset = f"bc-walker-{seed}", walker
        s.record(ahead)
    got = boards(build(s))
    assert [(t.split(",")[0], d) for t, d, _ in got] == [("locomotion", [D4RL]), (walker, [walker])]
    assert "half its algorithms" in got[0][0] and EVERY not in got[0][0]  # one domain: no "every dataset" board
    report = build(s)
    assert {e.split(" ")[0] for e in ranking(report, "IQM", got[0][1])["entry"]} == {"bc[cpu]", "iql[cpu]", "qgpo[cpu]"}
    out = tmp_path / "LB.md"
    assert main(["leaderboard", "--results", str(s.path.parent), "--out", str(out)]) == 0
    assert f"Left to boards of their own until at least half the algorithms of their domain have run them (or, for " \
           f"another content of a dataset id, until it is the one most ran): {walker}." in out.read_text()
    # two of the three on walker2d: half have run it, so the domain's board takes it (and ranks those two); iql, on
    # hopper only, is ranked on hopper's own board
    for seed in range(3):
        more = run_result("qgpo", D4RL, seed)
        more.run_id, more.dataset = f"qgpo-walker-{seed}", walker
        s.record(more)
    got = boards(build(s))
    assert [(t, d) for t, d, _ in got] == [("locomotion", [D4RL, walker]), (D4RL, [D4RL])]


def test_the_readme_headline_is_rewritten_between_its_markers_and_nowhere_else(capsys, store, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# title\n\nhand text\n<!-- headline:start -->\nstale numbers\n<!-- headline:end -->\ntail\n")
    argv = ["leaderboard", "--results", str(store.path.parent), "--out", str(tmp_path / "LB.md"), "--readme", str(readme)]
    assert main(argv + ["--top", "1"]) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\nhand text\n<!-- headline:start -->\n") and text.endswith("<!-- headline:end -->\ntail\n")
    block = text.split("<!-- headline:start -->")[1].split("<!-- headline:end -->")[0]
    assert "stale numbers" not in block and "do not edit by hand" in block
    # one board per domain (locomotion: hopper-medium-v2; pointmaze: the generated maze); the top entry and the one
    # that shares its rank in each, bc (rank =3 on both) left out at --top 1
    rows = [line for line in block.splitlines() if line.startswith("| ") and "qgpo[cpu] s=1" in line]
    assert len(rows) == 2 and all("=1 of 4" in r for r in rows) and "bc[cpu]" not in block
    # locomotion ranks s=1 =1, held-out =1, s=0 2, bc 3 (listed by rank): --top 3 stops at rank 2, --top 4 takes bc
    assert main(argv) == 0 and "bc[cpu]" not in readme.read_text()
    assert main(argv + ["--top", "4"]) == 0 and "bc[cpu]" in readme.read_text()
    capsys.readouterr()
    readme.write_text("no markers here\n")
    (tmp_path / "LB.md").unlink()
    assert main(argv) == 2 and readme.read_text() == "no markers here\n" and not (tmp_path / "LB.md").exists()
    assert "has no headline block" in capsys.readouterr().err
    assert main(argv + ["--top", "0"]) == 2 and "--top must be at least 1" in capsys.readouterr().err


def test_a_preset_declared_short_of_competence_is_shown_but_ranked_nowhere(store, tmp_path, monkeypatch):
    monkeypatch.setattr(registry.get("bc"), "short_of_competence", {"cpu": "its reference curve starts later"})
    report = build(store)
    assert "bc[cpu]" in set(report.per_dataset["entry"])  # its scores stay in the tables
    for datasets in (None, [D4RL], [GEN]):
        assert "bc[cpu]" not in ranking(report, "IQM", datasets)["entry"].tolist()
    out = tmp_path / "LEADERBOARD.md"
    assert main(["leaderboard", "--results", str(store.path.parent), "--out", str(out)]) == 0
    board = out.read_text()
    assert "Not ranked, short of competence at their preset's budget (why: Notes): bc[cpu]." in board
    assert "bc[cpu] is short of competence at this budget: its reference curve starts later" in board
    monkeypatch.setattr(registry.get("bc"), "short_of_competence", {"paper": "another preset's"})
    assert "bc[cpu]" in ranking(build(store), "IQM")["entry"].tolist()  # only the named preset


def test_a_family_where_a_preset_is_short_for_every_algorithm_is_shown_and_on_no_board(store, tmp_path, monkeypatch):
    """OGBench at the cpu preset: every method's 0 there is the budget's (`policies.competence`). Its scores stay in
    the per-dataset table; the boards rank the other datasets, as if it were not there; the sweep makes its runs
    last."""
    from bench.harness.sweep import load_sweep
    from bench.reports.leaderboard import boards
    from envs.families import family
    from policies import competence

    monkeypatch.setitem(competence.FAMILY_SHORTFALLS, ("cpu", family(GEN)), "its rewards need more steps")
    report = build(store)
    assert {"bc[cpu]", "qgpo[cpu] s=1"} <= set(report.per_dataset.query("dataset == @GEN")["entry"])
    assert [datasets for _, datasets, _ in boards(report)] == [[D4RL]]
    assert set(ranking(report, "IQM")["entry"]) == set(ranking(report, "IQM", [D4RL])["entry"]) != set()
    assert ranking(report, "IQM", [GEN]).empty
    assert set(report.aggregates["datasets"]) == {1} and set(report.improvement["datasets"]) == {1}  # D4RL's alone
    assert GEN not in set(report.gains["dataset"]) and D4RL in set(report.gains["dataset"])
    from bench.reports.render import _figures

    profiles = _figures(report)["profiles"]()
    assert all(t.get_text().endswith("[1 dataset]") for t in profiles.axes[0].get_legend().get_texts())
    out = tmp_path / "LEADERBOARD.md"
    assert main(["leaderboard", "--results", str(store.path.parent), "--out", str(out)]) == 0
    board = out.read_text()
    assert f"## Shown, not ranked" in board and board.count(GEN) >= 2  # named as not ranked, and scored per dataset
    assert f"not ranked on {family(GEN)} at the cpu preset: its rewards need more steps" in board
    assert f"over {GEN}" not in board
    spec = tmp_path / "sweep.yaml"
    spec.write_text(f"algorithms: [bc, iql]\ndatasets: [{GEN}, {D4RL}]\nseeds: [0]\npreset: cpu\norder: dataset\n")
    assert [r.dataset for r in load_sweep(spec).runs()] == [D4RL, D4RL, GEN, GEN]  # ranked runs first


def test_a_spec_reads_its_runs_made_on_other_data_than_the_local_copy(tmp_path, monkeypatch, capsys):
    """The leaderboard's locomotion data made on an Intel CPU differ from the AMD machines' that made its runs: a
    report of the spec read them at the local copy's content and silently dropped every such run. It reads a
    dataset at the content the store's runs recorded unless the store holds runs on the local copy; a sweep (which
    trains on the local copy) refuses to start those cells again on other data unless told to."""
    from envs import catalog
    from bench.harness.plan import read_ids
    from bench.harness.sweep import load_sweep

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    name, results, spec = "diffbench/pointmaze/umaze-small-v0", tmp_path / "results", tmp_path / "s.yaml"
    spec.write_text(f"algorithms: [bc]\ndatasets: [{name}]\nseeds: [0]\npreset: tiny\nepisodes: 2\n"
                    "overrides: {device: cpu}\n")
    catalog.generate(name, steps=400, seed=0, ref_episodes=2, progress=False)
    assert main(["sweep", str(spec), "--results", str(results), "--no-progress"]) == 0
    stored, = ResultsStore(results).table("runs")["run_id"]
    catalog.generate(name, steps=400, seed=1, ref_episodes=2, progress=False, overwrite=True)  # another machine's
    runs = load_sweep(spec).runs()
    assert runs[0].run_id() != stored and read_ids(runs, ResultsStore(results).table("runs")) == [stored]
    assert main(["report", "--results", str(results), "--spec", str(spec), "--out", str(tmp_path / "out"),
                 "--format", "md"]) == 0
    assert "bc[tiny]" in (tmp_path / "out" / "report.md").read_text()
    capsys.readouterr()
    sweep = ["sweep", str(spec), "--results", str(results), "--no-progress"]
    assert main(sweep) != 0  # it would start the cell again on other data: said, nothing run
    assert f"{name} (here {catalog.fingerprint(name)}, the store's" in capsys.readouterr().err
    assert len(ResultsStore(results).table("runs")) == 1
    assert main(sweep + ["--other-data", "skip"]) == 0 and len(ResultsStore(results).table("runs")) == 1
    assert f"left out: {name}" in capsys.readouterr().out
    assert main(sweep + ["--other-data"]) == 0 and len(ResultsStore(results).table("runs")) == 2


def test_performance_profiles_name_the_datasets_behind_each_entry():
    from bench.reports import plots

    fig = plots.performance_profiles({"a": np.full((3, 2), 50.0), "b": np.full((3, 1), 20.0)})
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a  [2 datasets]", "b  [1 dataset]"]


def test_a_papers_per_dataset_settings_keep_one_entry_and_are_named_but_a_users_own_part_it(tmp_path):
    """SRPO at its cpu preset takes beta 0.2 on hopper-medium-replay and regq on the UMaze from its paper's tables:
    one method across datasets, as a paper's row is (the leaderboard had split it in two, ranking it nowhere)."""
    from policies import config as cfg_tools
    from bench.harness.runner import RunSpec

    replay, maze = "diffbench/hopper/medium-replay-small-v0", "diffbench/pointmaze/umaze-dense-small-v0"
    s = ResultsStore(tmp_path / "store")

    def record(dataset: str, seed: int, overrides: dict, tag: str = "") -> None:
        run = run_result("bc", GEN, seed)  # bc's scores there, recorded as srpo's on `dataset`
        run.run_id, run.algorithm, run.dataset = f"srpo-{dataset}-{seed}{tag}", "srpo", dataset
        run.config = cfg_tools.to_dict(RunSpec("srpo", dataset, seed=seed, preset="cpu", overrides=overrides).config())
        s.record(run)

    for dataset in (replay, maze):
        for seed in range(3):
            record(dataset, seed, {})
    report = build(s)
    assert set(report.per_dataset["entry"]) == {"srpo[cpu]"}
    note, = [n for n in report.notes if "per-dataset settings from" in n]
    assert f"{replay}: beta 0.2" in note and f"{maze}: regq true" in note
    for seed in range(3):  # the user's own beta over the table's on one dataset: another entry
        record(replay, seed, {"beta": 0.7}, "-user")
    entries = build(s).per_dataset.groupby("dataset")["entry"].nunique()
    assert entries[replay] == 2 and entries[maze] == 1


def test_scores_of_a_subset_of_runs_tag_its_entries_among_themselves(store):
    """`compare --spec` reads the spec's runs alone: another config of bc elsewhere in the store gives its bc rows
    no tag."""
    from bench.reports.report import run_scores

    for seed in range(3):
        run = run_result("bc", GEN, seed)
        run.run_id, run.config = f"bc-lr-{seed}", {**run.config, "lr": 3e-4}
        store.record(run)
    tagged = {e for e in run_scores(store)["entry"] if e.startswith("bc")}
    assert len(tagged) == 2 and all(e.startswith("bc[cpu]#") for e in tagged)
    mine = {f"bc-{GEN}-{seed}" for seed in range(3)}
    assert set(run_scores(store, mine)["entry"]) == {"bc[cpu]"}


def test_compare_pairs_two_configs_of_one_algorithm_seed_by_seed_and_says_what_each_tag_is(capsys, tmp_path):
    s = ResultsStore(tmp_path / "store")
    for lr, scores in ((1e-3, [10, 20, 30]), (1e-2, [14, 22, 36])):
        for seed in range(3):
            r = run_result("bc", GEN, seed)
            shift = scores[seed] - SCORES[("bc", GEN)][None][seed]
            r.final = [{**row, "score": row["score"] + shift, "return": row["return"] + shift} for row in r.final]
            r.run_id, r.config = f"bc-{lr}-{seed}", {"seed": seed, "lr": lr}
            s.record(r)
    assert main(["compare", "bc", "bc", "--results", str(s.path.parent)]) == 0
    out = capsys.readouterr().out
    # differences 4, 2, 6 (or their negatives): mean 4, std 2, t(2) = 4.30: 4 +- 4.97, a tie
    assert "+4.0 [-1.0, +9.0] (3), tie" in out and "-4.0 [-9.0, +1.0] (3), tie" in out
    assert "bc[cpu] is 2 entries, one per config; they differ in lr" in out


def test_an_entry_whose_seeds_are_still_running_is_listed_not_ranked(store, tmp_path):
    """One finished seed of three has no interval (its IQM's bootstrap is one point): a board holds it back."""
    for dataset, seeds in ((D4RL, range(3)), (GEN, range(1))):
        for seed in seeds:
            r = run_result("bc", dataset, seed)
            r.run_id, r.algorithm = f"iql-{dataset}-{seed}", "iql"
            store.record(r)
    report = build(store)
    assert "iql[cpu]" not in " ".join(ranking(report, "IQM", [D4RL, GEN])["entry"])
    assert "iql[cpu]" in " ".join(ranking(report, "IQM", [D4RL])["entry"])  # its own complete cell ranks
    write_leaderboard(report, tmp_path / "LEADERBOARD.md", "IQM", "test")
    assert f"Not ranked yet, their seeds still running: iql[cpu] (1 of 3 seeds on {GEN})." in \
        (tmp_path / "LEADERBOARD.md").read_text()
    # the report's aggregates read its complete cell alone (3 seeds on one dataset), not every cell cut to one seed
    agg = report.aggregates[report.aggregates["entry"] == "iql[cpu]"]
    assert set(agg["datasets"]) == {1} and set(agg["seeds"]) == {3}
    assert (agg["upper"] > agg["lower"]).all()
    assert f"iql[cpu] on {GEN} (1 of 3 seeds)" in " ".join(report.notes)
    assert not report.improvement[(report.improvement["x"] == "iql[cpu]") | (report.improvement["y"] == "iql[cpu]")
                                  ]["datasets"].gt(1).any()


def test_a_dataset_made_again_is_read_at_its_newer_bytes_when_the_runs_tie(monkeypatch):
    """Without the data on disk a report reads each dataset at the content most of its runs hold; hopper's
    medium-replay, made again on the portable recipe, held three runs on each content for a while."""
    import pandas as pd

    from bench.harness import plan

    monkeypatch.setattr(plan.catalog, "fingerprint", lambda name: "unavailable")
    runs = pd.DataFrame({"dataset": ["d"] * 4, "status": "finished",
                         "dataset_content": ["old", "old", "new", "new"], "finished": [1.0, 2.0, 3.0, 4.0]})
    assert plan.read_contents(runs, ["d"]) == {"d": "new"}  # a tie: the content whose runs finished last
    more = pd.concat([runs, runs.iloc[[0]].assign(finished=0.5)])
    assert plan.read_contents(more, ["d"]) == {"d": "old"}  # more runs: the majority, whenever made
    monkeypatch.setattr(plan.catalog, "fingerprint", lambda name: "new")
    assert plan.read_contents(more, ["d"]) == {"d": "new"}  # the local copy, where the store holds runs on it
