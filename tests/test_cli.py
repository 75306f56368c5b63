import json

import pytest

from bench.cli import main

from .conftest import TINY_ID


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_generatable_and_local(capsys, tiny_pointmaze):
    code, out, _ = run(capsys, "datasets", "list", "--json")
    rows = {r["id"]: r for r in json.loads(out)}
    assert code == 0
    assert rows[TINY_ID]["on_disk"] and rows["diffbench/pointmaze/large-v0"]["generatable"]
    # which recipes make the same bytes on Intel and AMD CPUs: all but the torch-rolled -medium-small locomotion
    assert rows[TINY_ID]["same_bytes_on"] == rows["diffbench/hopper/medium-replay-small-v0"]["same_bytes_on"] == "x86-64-v3"
    assert rows["diffbench/hopper/medium-small-v0"]["same_bytes_on"] == "one CPU vendor"
    code, out, _ = run(capsys, "datasets", "list")
    assert out.splitlines()[0].split()[-3:] == ["same", "bytes", "on"]


def test_info_json(capsys, tiny_pointmaze):
    code, out, _ = run(capsys, "datasets", "info", TINY_ID, "--json")
    info = json.loads(out)
    assert code == 0
    assert info["observation_dim"] == 8 and info["action_dim"] == 2
    assert info["episodes"] > 1 and info["ref_max_score"] > info["ref_min_score"]
    assert info["card"]["seed"] == 0 and info["card"]["content_checksum"].startswith("sha256:")


def test_info_text_and_verify(capsys, tiny_pointmaze):
    code, out, _ = run(capsys, "datasets", "info", TINY_ID)
    assert code == 0 and "observation layout: achieved_goal[0:2]" in out
    code, out, _ = run(capsys, "datasets", "verify", TINY_ID, "--json")
    assert code == 0 and json.loads(out)["checksum_matches_card"] is True


def test_unknown_dataset_is_one_line_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    code, out, err = run(capsys, "datasets", "info", "nobody/nothing-v0")
    assert code == 2 and out == ""
    assert err.startswith("diffbench: error: dataset 'nobody/nothing-v0' is not on disk") and "Traceback" not in err


def test_generate_refuses_unknown_recipe(capsys):
    assert main(["datasets", "generate", "diffbench/pointmaze/nowhere-v0"]) == 2
    err = capsys.readouterr().err
    assert "cannot generate 'diffbench/pointmaze/nowhere-v0'" in err and "diffbench/pointmaze/umaze-v0" in err


def test_a_sweep_short_of_several_datasets_names_them_all_in_one_command(capsys, tmp_path, monkeypatch):
    """A fresh machine lacks every generated dataset: one error lists them all (an OGBench single-task view by its
    play data) with the one command that makes them, rather than one dataset per attempt; that command refuses
    an id it cannot make before making anything."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty"))
    spec = tmp_path / "sweep.yaml"
    spec.write_text("algorithms: [bc, iql]\npreset: tiny\ndatasets: [diffbench/hopper/medium-small-v0, "
                    "diffbench/ogbench/cube-single-play-small-singletask-v0, diffbench/hopper/medium-small-v0, "
                    "diffbench/ogbench/cube-single-play-small-singletask-task2-v0, diffbench/pointmaze/umaze-small-v0]\n")
    code, out, err = run(capsys, "sweep", str(spec), "--plan", "--results", str(tmp_path / "runs"))
    missing = "diffbench/hopper/medium-small-v0 diffbench/ogbench/cube-single-play-small-v0 diffbench/pointmaze/umaze-small-v0"
    assert code == 2 and out == "" and "3 datasets these runs need are not on disk" in err
    assert err.strip().endswith(f"Generate them all with: diffbench datasets generate {missing}")
    code, _, err = run(capsys, "datasets", "generate", "diffbench/pointmaze/umaze-small-v0", "diffbench/nowhere-v0")
    assert code == 2 and "cannot generate 'diffbench/nowhere-v0'" in err and not (tmp_path / "empty").exists()


def test_help_loads_none_of_the_heavy_libraries():
    """Issue 35: `diffbench --help` took seconds (torch, Minari and MuJoCo imported to build the parser)."""
    import subprocess
    import sys

    code = ("import sys\nfrom bench.cli import build_parser\nbuild_parser().format_help()\n"
            "print(sorted(m for m in ('torch', 'minari', 'mujoco', 'gymnasium', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_toy_floor_writes_results(capsys, tmp_path):
    out_file = tmp_path / "floor.md"
    code, out, _ = run(capsys, "toy", "floor", "--tasks", "checkerboard", "--betas", "0,3", "--n", "300",
                       "--repeats", "2", "--out", str(out_file))
    assert code == 0
    text = out_file.read_text()
    assert "| checkerboard | 3 |" in text and "diffbench toy floor --tasks checkerboard" in text
    assert out_file.with_suffix(".csv").read_text().startswith("task,beta,")
    code, _, err = run(capsys, "toy", "floor", "--tasks", "bogus", "--out", str(out_file))
    assert code == 2 and "unknown toy task(s) bogus" in err


def test_quick_compares_guided_with_the_s0_ablation_over_seeds(capsys, tiny_pointmaze, tmp_path):
    results = tmp_path / "quick"
    argv = ["quick", "--dataset", TINY_ID, "--preset", "tiny", "--episodes", "2", "--guidance-scales", "1",
            "--selection-episodes", "2", "--algorithms", "qgpo,dxmi", "--workers", "1", "--results", str(results),
            "--no-progress"]
    code, out, _ = run(capsys, *argv)
    assert code == 0, out
    assert "qgpo, dxmi (tiny preset)" in out
    assert "seeds 0,1, qgpo's guidance scales 0, 1" in out  # the ablation is added when not asked for
    table = (results / "quick.md").read_text()
    assert table.startswith("| method | NFE per action | seed 0 | seed 1 | mean ± std over seeds | vs s = 0 |")
    for method in ("qgpo s = 0 (diffusion BC)", "qgpo s = 1", "qgpo, scale chosen", "dxmi"):
        assert f"\n| {method}" in table, method
    assert table in out and out.count(" NFE per action,") == 4
    assert "in stages trained before and restored" in out  # DxMI restored QGPO's stages
    code, out, _ = run(capsys, *argv)
    assert code == 0 and out.count("skipped (finished before)") == 4 and table in out


@pytest.mark.parametrize("argv,message", [
    (["run", "qgpo", TINY_ID, "sampler.name=euler"], "unknown sampler 'euler'"),
    (["run", "qgpo", TINY_ID, "guidance_scale=-2"], "guidance_scale must be >= 0"),
    (["run", "qgpo", TINY_ID, "nonsense=1"], "unknown config key 'nonsense'"),
    (["run", "qgpo", TINY_ID, "beta"], "expected key=value, got 'beta'"),
    (["run", "ddpm", TINY_ID], "unknown algorithm 'ddpm'"),
    (["run", "qgpo", TINY_ID, "--preset", "huge"], "unknown preset 'huge'"),
    (["quick", "--dataset", "nobody/nothing-v0"], "dataset 'nobody/nothing-v0' is not on disk"),
    (["quick", "--algorithms", "qgpo,ddpm"], "unknown algorithm 'ddpm'"),
    (["quick", "--selection-episodes", "0"], "selection_episodes must be an integer >= 1"),
    (["run", "bc", TINY_ID, "--seed", str(2**63)], "seed must be at most 2**63 - 1"),  # before training, not at the store
    (["run", "bc", "diffbench/pointmaze/" + "a" * 300], "File name too long"),
])
def test_bad_settings_are_one_line_errors(capsys, tiny_pointmaze, tmp_path, argv, message):
    code, out, err = run(capsys, *argv, "--results", str(tmp_path))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_path_the_file_system_refuses_is_one_line(capsys, tmp_path):
    code, _, err = run(capsys, "datasets", "info", str(tmp_path / ("a" * 300) / "x.hdf5"))
    assert code == 2 and "a folder or file name may be at most 255 bytes" in err and len(err.strip().splitlines()) == 1


def test_every_option_of_every_command_has_help_and_shows_its_default(capsys):
    """Issue 35: `--seed`, `--eval-seed`, `--executor`, `compare b` and others had no help, and no default showed."""
    import argparse

    from bench.cli import build_parser

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, [*path, name])
            elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                yield " ".join(path), action

    actions = list(walk(build_parser(), ["diffbench"]))
    assert len(actions) > 150
    assert [f"{where} {'/'.join(a.option_strings) or a.dest}" for where, a in actions if not a.help] == []
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "seed of the run (initialisation, batches, sampling) (default: 0)" in text
    assert "(default: runs)" in text and "(default: None)" not in text
