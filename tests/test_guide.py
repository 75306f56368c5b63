"""docs/adding-an-algorithm.md, run from its own code blocks: the two example algorithms (a one-stage %BC and a
two-stage AWR, each under 150 lines) installed as a plug-in through the guide's entry points, keeping the
contract, and their sweep reaching the report and the leaderboard."""

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
    """The guide's modules and pyproject, installed as a distribution on sys.path (and for worker processes)."""
    site = tmp_path / "site"
    site.mkdir()
    toml = tomllib.loads(blocks("toml")[0])
    project, modules = toml["project"], toml["tool"]["setuptools"]["py-modules"]
    for module, code in zip(modules, blocks("python"), strict=True):
        (site / f"{module}.py").write_text(code)
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    points = project["entry-points"]["diffbench.algorithms"]
    (info / "entry_points.txt").write_text("[diffbench.algorithms]\n" + "".join(f"{k} = {v}\n" for k, v in points.items()))
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_ALGORITHMS", {})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", str(site))
    for module in modules:
        monkeypatch.delitem(sys.modules, module, raising=False)
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


def test_the_guides_two_stage_algorithm_keeps_the_contract_and_acts_toward_the_better_actions(plugin, umaze, tmp_path):
    from .checks import offset_bandit

    assert len(blocks("python")[1].splitlines()) < 150
    cls = registry.get("awr")
    assert cls.__name__ == "AWR" and cls.stages == ("value", "actor")
    contract.check_all("awr", umaze, tmp_path)  # a cut in the actor's stage resumes without the value retrained
    data = offset_bandit(n=2048, offset=0.0)  # one step: r = a in state 1, -a in state 0, behaviour uniform
    algo = cls.for_dataset(data, contract.tiny("awr", value_steps=400, steps=600, temperature=0.3))
    algo.fit(data)
    means = algo.act(np.repeat(np.eye(2), 256, 0))[:, 0].reshape(2, 256).mean(1)
    assert means[0] < -0.1 and means[1] > 0.1, means


def test_the_guides_sweep_reaches_the_report_and_the_leaderboard(plugin, tiny_pointmaze, tmp_path, capsys):
    spec = yaml.safe_load(blocks("yaml")[0])
    assert plugin in spec["algorithms"]
    spec.update(preset="tiny", seeds=[0], episodes=2, datasets=[tiny_pointmaze])  # the guide's spec at test scale
    spec["overrides"]["device"] = "cpu"
    path = tmp_path / "pct_bc.yaml"
    path.write_text(yaml.safe_dump(spec))
    results = tmp_path / "results"
    assert main(["sweep", str(path), "--results", str(results), "--no-progress"]) == 0
    assert "3 finished, 0 skipped, 0 failed" in capsys.readouterr().out
    assert main(["report", "--results", str(results), "--out", str(tmp_path / "report")]) == 0
    assert main(["leaderboard", "--results", str(results), "--out", str(tmp_path / "LEADERBOARD.md")]) == 0
    for name in (plugin, "awr"):
        assert name in (tmp_path / "report" / "report.md").read_text() and name in (tmp_path / "LEADERBOARD.md").read_text()
