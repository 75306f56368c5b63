"""Algorithms from other packages register through the `diffbench.algorithms` entry point group."""

import sys

import pytest

from policies import registry
from policies.errors import ConfigError


def install_plugin(root, module_source: str, target: str) -> None:
    """A minimal installed distribution: a module and a dist-info with one entry point."""
    (root / "thirdparty_algo.py").write_text(module_source)
    info = root / "thirdparty_algo-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-algo\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[diffbench.algorithms]\nmine = {target}\n")


@pytest.fixture
def fresh_registry(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_ALGORITHMS", {})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "thirdparty_algo", raising=False)  # each test installs its own version
    return tmp_path


def test_an_entry_point_adds_an_algorithm_with_its_presets(fresh_registry):
    install_plugin(fresh_registry, "from policies.algorithms.qgpo import QGPO\n\nclass Mine(QGPO):\n    name = 'mine'\n",
                   "thirdparty_algo:Mine")
    assert registry.available() == ["bc", "ctrl", "dac", "ddpo", "diffusion_ql", "dxmi", "fql", "idql", "iql", "mine", "qgpo", "sfbc", "srpo", "td3bc"]
    assert registry.make_config("mine", "tiny", beta=5).beta == 5.0


def test_a_broken_plugin_is_one_warning_and_the_builtins_still_work(fresh_registry):
    install_plugin(fresh_registry, "raise ImportError('needs jax')\n", "thirdparty_algo:Mine")
    with pytest.warns(UserWarning, match="algorithm plug-in 'mine' .* failed to import and is left out: "
                                         "ImportError: needs jax") as caught:
        assert registry.available() == ["bc", "ctrl", "dac", "ddpo", "diffusion_ql", "dxmi", "fql", "idql", "iql", "qgpo", "sfbc", "srpo", "td3bc"]
    assert len(caught) == 1
    with pytest.raises(ConfigError, match="unknown algorithm 'mine'"):
        registry.get("mine")


def test_an_entry_point_that_is_not_an_algorithm_is_left_out_with_a_warning(fresh_registry):
    install_plugin(fresh_registry, "Mine = 3\n", "thirdparty_algo:Mine")
    with pytest.warns(UserWarning, match="not an Algorithm subclass"):
        assert registry.get("qgpo").name == "qgpo"


def test_every_builtin_says_what_it_is_and_the_listing_shows_it(capsys):
    """The one line a listing shows names the method and, where ours is not the published method, says so."""
    import json

    from bench.cli import main

    assert main(["algorithms", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) >= {"qgpo", "ddpo", "ctrl", "dxmi", "bc", "td3bc", "iql", "diffusion_ql", "idql", "sfbc"}
    assert all(r["description"] and "cpu" in r["presets"] and r["stages"] for r in rows.values()), rows
    assert rows["qgpo"]["stages"] == ["behaviour", "support", "critic", "energy"]
    assert "not the published" in rows["ddpo"]["description"]
    assert "this project's extension" in rows["dxmi"]["description"]
    assert [n for n, r in rows.items() if r["guided"]] == ["qgpo"]  # what --guidance-scales applies to
    # a preset declared short of competence is one the algorithm has, and says why
    assert all(set(r["short_of_competence"]) <= set(r["presets"]) and all(r["short_of_competence"].values())
               for r in rows.values())
    assert list(rows["dac"]["short_of_competence"]) == ["cpu"]
