"""docs/adding-an-algorithm.md, run from its own code blocks: the example algorithm (under 150 lines) installed
as a plug-in through the guide's entry point, keeping the contract, and its sweep reaching the report and
the leaderboard."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from bench.cli import main
from policies import registry

from . import contract

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DOC = Path(__file__).parents[1] / "docs" / "adding-an-algorithm.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture
def plugin(monkeypatch, tmp_path):
    """The guide's module and pyproject, installed as a distribution on sys.path (and for worker processes)."""
    site = tmp_path / "site"
    site.mkdir()
    project = tomllib.loads(blocks("toml")[0])["project"]
    (site / "my_pct_bc.py").write_text(blocks("python")[0])
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    points = project["entry-points"]["diffbench.algorithms"]
    (info / "entry_points.txt").write_text("[diffbench.algorithms]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_ALGORITHMS", {})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    monkeypatch.delitem(sys.modules, "my_pct_bc", raising=False)
    return "pct_bc"


def test_the_guides_algorithm_is_one_short_file_that_keeps_the_contract(plugin, umaze, tmp_path):
    assert len(blocks("python")[0].splitlines()) < 150
    assert registry.get(plugin).__name__ == "PercentBC"
    contract.check_all(plugin, umaze, tmp_path)
    # its own ground truth: keeping every episode is BC, batch for batch
    cls, bc = registry.get(plugin), registry.get("bc")
    mine = cls.for_dataset(umaze, contract.tiny(plugin, fraction=1.0))
    mine.fit(umaze)
    theirs = bc.for_dataset(umaze, contract.tiny("bc"))
    theirs.fit(umaze)
    obs = umaze.transitions.observations[:9].numpy()
    assert np.array_equal(mine.act(obs), theirs.act(obs))


def test_the_guides_sweep_reaches_the_report_and_the_leaderboard(plugin, tiny_pointmaze, tmp_path, capsys):
    spec = yaml.safe_load(blocks("yaml")[0])
    assert plugin in spec["algorithms"]
    spec.update(preset="tiny", seeds=[0], episodes=2)  # the guide's spec at test scale
    spec["overrides"]["device"] = "cpu"
    path = tmp_path / "pct_bc.yaml"
    path.write_text(yaml.safe_dump(spec))
    results = tmp_path / "results"
    assert main(["sweep", str(path), "--results", str(results), "--no-progress"]) == 0
    assert "2 finished, 0 skipped, 0 failed" in capsys.readouterr().out
    assert main(["report", "--results", str(results), "--out", str(tmp_path / "report")]) == 0
    assert main(["leaderboard", "--results", str(results), "--out", str(tmp_path / "LEADERBOARD.md")]) == 0
    assert plugin in (tmp_path / "report" / "report.md").read_text() and plugin in (tmp_path / "LEADERBOARD.md").read_text()
