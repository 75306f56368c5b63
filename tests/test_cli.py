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
    with pytest.raises(SystemExit):
        main(["datasets", "generate", "diffbench/pointmaze/nowhere-v0"])
    assert "invalid choice" in capsys.readouterr().err


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


def test_quick_trains_and_evaluates_qgpo(capsys, tiny_pointmaze, tmp_path):
    work = tmp_path / "quick"
    code, out, _ = run(capsys, "quick", "--preset", "tiny", "--workdir", str(work), "--episodes", "2",
                       "--guidance-scales", "0,1", "--no-progress")
    assert code == 0, out
    assert "guidance scale 0: return" in out and "guidance scale 1: return" in out
    report = json.loads((work / "eval.json").read_text())
    assert [r["guidance_scale"] for r in report["eval"]] == [0.0, 1.0]
    assert report["cost"]["nfe_per_action"] == 4 and report["eval"][0]["episodes"] == 2
    code, out, _ = run(capsys, "quick", "--preset", "tiny", "--workdir", str(work), "--episodes", "2",
                       "--guidance-scales", "1", "--no-progress")
    assert code == 0 and out.count("(resumed)") == 4


@pytest.mark.parametrize("argv,message", [
    (["train", "qgpo", TINY_ID, "--set", "sampler.name=euler"], "unknown sampler 'euler'"),
    (["train", "qgpo", TINY_ID, "--set", "guidance_scale=-2"], "guidance_scale must be >= 0"),
    (["train", "qgpo", TINY_ID, "--set", "nonsense=1"], "unknown config key 'nonsense'"),
    (["train", "qgpo", TINY_ID, "--set", "beta"], "expected key=value, got 'beta'"),
    (["train", "ddpm", TINY_ID], "unknown algorithm 'ddpm'"),
    (["train", "qgpo", TINY_ID, "--preset", "huge"], "unknown preset 'huge'"),
])
def test_train_rejects_bad_settings_in_one_line(capsys, tiny_pointmaze, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
