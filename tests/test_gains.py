"""The report's gains over diffusion BC: each method built on QGPO's behaviour model, paired seed by seed with that
model sampled alone, and only where the two runs share the very weights."""

import pandas as pd
import pytest

from bench.cli import main
from bench.harness.store import ResultsStore, RunResult
from bench.reports.report import build

GEN = "diffbench/pointmaze/umaze-v0"


def run(algo: str, seed: int, scores: dict, digest: str | None, selected: float | None = None,
        start: float | None = None) -> RunResult:
    """A finished run on GEN whose final episodes score `scores` (variant's guidance scale or None -> score), and
    its start `start` on the same episodes where given."""
    final = []
    for scale, score in {**scores, **({"start": start} if start is not None else {})}.items():
        variant = scale if scale == "start" else "default" if scale is None else f"guidance_scale={scale:g}"
        scale = None if scale == "start" else scale
        final += [{"variant": variant, "guidance_scale": scale, "episode": i, "return": score, "length": 10,
                   "score": score} for i in range(2)]
    weights = {"behaviour": {"digest": digest, "shared_as": "behaviour-abc"}} if digest else {}
    return RunResult(run_id=f"{algo}-{seed}", algorithm=algo, dataset=GEN, seed=seed, preset="cpu",
                     config={"seed": seed}, started=0.0, finished=1.0, gradient_steps=10, nfe_per_action=1,
                     selected_guidance_scale=selected, final=final, diagnostics={"weights": weights} if weights else {})


def test_gains_pair_each_seed_with_its_own_behaviour_model_and_say_when_they_are_told_apart(tmp_path):
    s = ResultsStore(tmp_path / "store")
    for seed, (bc_score, guided) in enumerate([(20.0, 25.0), (30.0, 33.0), (40.0, 47.0)]):
        s.record(run("qgpo", seed, {0.0: bc_score, 1.0: guided}, f"w{seed}", selected=1.0))
    s.record(run("srpo", 0, {None: 10.0}, "w0"))  # -10 against seed 0's model
    s.record(run("srpo", 1, {None: 99.0}, "retrained-otherwise"))  # another model: never paired with seed 1's
    s.record(run("srpo", 2, {None: 45.0}, None))  # no digest recorded: paired by dataset, preset and seed (+5)
    s.record(run("ddpo", 7, {None: 50.0}, None))  # no QGPO run on its seed: nothing to pair with
    s.record(run("bc", 0, {None: 90.0}, None))  # its own policy, no behaviour model of QGPO's
    gains = build(s).gains.set_index("entry")
    assert set(gains.index) == {"qgpo[cpu] s=1", "qgpo[cpu] s=held-out choice", "srpo[cpu]"}
    assert (gains["against"] == "qgpo[cpu] s=0 (diffusion BC)").all()
    guided = gains.loc["qgpo[cpu] s=1"]
    assert guided["pairs"] == 3 and guided["mean"] == pytest.approx(5.0) and guided["verdict"] == "better"
    assert guided["low"] > 0 and guided["diffusion BC"] == "30.0"
    assert (gains.loc[["qgpo[cpu] s=1", "qgpo[cpu] s=held-out choice"], "pairing"] == "paired").all()
    # one seed's model trained apart: the cell is compared unpaired, Welch's interval over all three seeds
    srpo = gains.loc["srpo[cpu]"]
    assert srpo["pairing"] == "unpaired (Welch)" and srpo["pairs"] == 3
    assert srpo["mean"] == pytest.approx((10 + 99 + 45) / 3 - 30.0) and srpo["verdict"] == "tie"
    assert f"srpo[cpu] on {GEN} (seed 1)" in " ".join(build(s).notes)  # said, with why
    assert main(["report", "--results", str(tmp_path / "store"), "--out", str(tmp_path / "out"), "--format", "md,csv"]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Over diffusion BC: each method built on QGPO's behaviour model" in text
    assert f"| {GEN} | qgpo[cpu] s=1 | qgpo[cpu] s=0 (diffusion BC) | 3 | paired | 30.0 | +5.0 [" in text
    assert (tmp_path / "out" / "gains.csv").exists()


def test_welchs_interval_for_seeds_that_share_nothing():
    from bench.studies.paired import paired, welch
    import numpy as np
    import pandas as pd

    x, y = np.array([10.0, 12.0, 14.0]), np.array([1.0, 2.0, 3.0])
    w = welch(x, y)  # se = sqrt(4/3 + 1/3); df = (5/3)^2 / ((4/3)^2/2 + (1/3)^2/2) = 2.94 -> t(0.975, 2) = 4.303
    assert w.mean == pytest.approx(10.0) and w.high - w.mean == pytest.approx(4.303 * np.sqrt(5 / 3))
    assert welch(x, y[:1]).low != welch(x, y[:1]).low  # one seed on a side: no interval (NaN)
    # the same numbers paired seed by seed: differences 9, 10, 11, a far narrower interval
    rows = pd.DataFrame({"seed": [0, 1, 2], "a": x, "b": y})
    assert paired(rows, rows, "a", col_b="b").high - 10.0 < w.high - 10.0


def test_a_fine_tuner_is_paired_with_its_own_start_within_each_run_whatever_made_its_behaviour_model(tmp_path):
    """The start (the chain fine-tuning began from, on the same final episodes) is a reference the run carries: never
    an entry, and the gain over it is paired seed by seed even where the behaviour models were trained apart."""
    s = ResultsStore(tmp_path / "store")
    for seed in range(3):
        s.record(run("qgpo", seed, {0.0: 30.0 + seed, 1.0: 31.0 + seed}, f"w{seed}", selected=1.0))
        s.record(run("ddpo", seed, {None: 40.0 + 2 * seed}, f"elsewhere{seed}", start=20.0 + seed))  # +20, +21, +22
    s.record(run("ctrl", 0, {None: 50.0}, None, start=10.0))
    s.record(run("ctrl", 1, {None: 50.0}, None))  # made before starts were evaluated: left out
    s.record(run("ctrl", 2, {None: 50.0}, None, start=20.0))
    report = build(s)
    assert set(report.scores.loc[report.scores["algorithm"] == "ddpo", "entry"]) == {"ddpo[cpu]"}
    assert report.scores.loc[report.scores["algorithm"] == "ddpo", "score"].tolist() == [40.0, 42.0, 44.0]
    own = report.start_gains.set_index("entry")
    ddpo = own.loc["ddpo[cpu]"]
    assert ddpo["seeds"] == 3 and ddpo["mean"] == pytest.approx(21.0) and ddpo["verdict"] == "better"
    assert ddpo["high"] - ddpo["mean"] == pytest.approx(4.303 * 1.0 / 3 ** 0.5, rel=1e-3)  # t(2) x sd 1 / sqrt(3)
    assert ddpo["start"] == "21.0"
    assert own.loc["ctrl[cpu]", "seeds"] == 2 and own.loc["ctrl[cpu]", "mean"] == pytest.approx(35.0)
    assert report.gains.set_index("entry").loc["ddpo[cpu]", "pairing"] == "unpaired (Welch)"  # QGPO's s = 0: apart
    assert main(["report", "--results", str(tmp_path / "store"), "--out", str(tmp_path / "out"), "--format", "md,csv"]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Over each run's own start" in text and f"| {GEN} | ddpo[cpu] | 3 | 21.0 | +21.0 [" in text
    assert (tmp_path / "out" / "start_gains.csv").exists()
    from bench.reports.findings import write_findings
    from bench.reports.reference import load_reference

    cells = pd.DataFrame({"algorithm": ["ddpo"], "dataset": [GEN], "planned": [3], "finished": [3], "complete": [True]})
    page = write_findings(report, tmp_path / "FINDINGS.md", load_reference().iloc[:0], cells, None, "cmd").read_text()
    assert "What fine-tuning added over the chain it started from" in page
    assert f"| {GEN} | ddpo[cpu] | 3 | 21.0 | +21.0 [" in page
