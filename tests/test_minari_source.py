import json
import shutil
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
import torch

from envs import DatasetError, DatasetNotFoundError, load_dataset
from envs.catalog import generate, verify
from envs.minari_source import CARD_FILE, datasets_root

from .conftest import TINY_ID, TINY_STEPS


def test_generated_dataset_loads_through_minari(tiny_pointmaze):
    # the same path as an official dataset: minari.load_dataset under MINARI_DATASETS_PATH
    assert tiny_pointmaze in minari.list_local_datasets()
    raw = minari.load_dataset(tiny_pointmaze)
    ds = load_dataset(tiny_pointmaze)
    assert len(ds.transitions) == TINY_STEPS == raw.total_steps
    assert ds.transitions.num_episodes == raw.total_episodes
    assert ds.ref_min_score is not None and ds.ref_max_score > ds.ref_min_score
    assert ds.observation_space.shape == (8,)
    assert [k for k, _, _ in ds.observation_layout] == ["achieved_goal", "desired_goal", "observation"]
    first = next(raw.iterate_episodes())
    assert np.allclose(ds.transitions.observations[0, 2:4].numpy(), first.observations["desired_goal"][0])
    assert np.allclose(ds.transitions.observations[0, 4:8].numpy(), first.observations["observation"][0])


def test_a_generated_maze_names_its_collectors_score_as_the_datas_own(tiny_pointmaze):
    ds = load_dataset(tiny_pointmaze)
    card = ds.metadata["card"]
    score, how = ds.data_score()
    assert score == pytest.approx(100 * (card["collector_return"] - card["ref_min_score"])
                                  / (card["ref_max_score"] - card["ref_min_score"]))
    assert "collector" in how and "eval env" in how
    without = dict(ds.metadata, card={k: v for k, v in card.items() if not k.startswith("data_score")})
    assert ds.__class__(**{**ds.__dict__, "metadata": without}).data_score() is None  # maze segments: no eval episodes


def test_episodes_end_at_goals_as_truncations(tiny_pointmaze):
    t = load_dataset(tiny_pointmaze).transitions
    assert t.terminals.sum() == 0
    ends = t.episode_starts[1:] - 1
    assert torch.all(t.timeouts[ends] == 1) and int(t.timeouts.sum()) == t.num_episodes
    # every completed episode but the last earns the sparse reward on its final step
    assert torch.all(t.rewards[ends[:-1]] == 1)
    # within an episode the successor is the next observation
    inner = torch.ones(len(t), dtype=torch.bool)
    inner[ends] = False
    idx = torch.nonzero(inner).squeeze(1)
    assert torch.equal(t.next_observations[idx], t.observations[idx + 1])


def test_eval_env_matches_dataset_layout(tiny_pointmaze):
    ds = load_dataset(tiny_pointmaze)
    env = ds.make_env()
    obs, _ = env.reset(seed=0)
    assert obs.shape == (8,)
    parts = gym.spaces.unflatten(ds.raw_observation_space, obs)
    assert np.allclose(parts["desired_goal"], env.unwrapped.goal)
    assert np.allclose(parts["observation"][:2], parts["achieved_goal"])
    venv = ds.make_vector_env(3)
    vobs, _ = venv.reset(seed=0)
    assert vobs.shape == (3, 8)
    _, rew, term, trunc, _ = venv.step(np.zeros((3, 2), np.float32))
    assert rew.shape == (3,)


def test_generation_is_deterministic_and_atomic(tiny_pointmaze, session_root, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "other"))
    generate(TINY_ID, steps=TINY_STEPS, seed=0, ref_episodes=2, progress=False)
    again = json.loads((datasets_root() / TINY_ID / CARD_FILE).read_text())
    original = json.loads((session_root / TINY_ID / CARD_FILE).read_text())
    assert again["content_checksum"] == original["content_checksum"]
    assert again["ref_min_score"] == original["ref_min_score"]
    with pytest.raises(DatasetError, match="already exists.*--overwrite"):
        generate(TINY_ID, steps=TINY_STEPS, seed=0, ref_episodes=2, progress=False)
    generate(TINY_ID, steps=300, seed=1, ref_episodes=1, progress=False, overwrite=True)
    card = json.loads((datasets_root() / TINY_ID / CARD_FILE).read_text())
    assert card["steps"] == 300 and card["custom_size"] and card["content_checksum"] != original["content_checksum"]
    assert not [p for p in datasets_root().iterdir() if p.name.startswith(".diffbench-partial")]


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "root"))

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(TINY_ID, steps=50, ref_episodes=1, progress=False)
    assert not (datasets_root() / TINY_ID).exists()
    assert [p.name for p in datasets_root().iterdir()] == []


def test_verify_checks_checksum_against_card(tiny_pointmaze, dataset_copy):
    assert verify(tiny_pointmaze)["ok"]
    card = json.loads((dataset_copy / CARD_FILE).read_text())
    card["content_checksum"] = "sha256:0"
    (dataset_copy / CARD_FILE).write_text(json.dumps(card))
    report = verify(str(dataset_copy))
    assert report["checksum_matches_card"] is False and not report["ok"]


def test_missing_dataset_names_id_path_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=rf"{TINY_ID}.*looked in {tmp_path}.*diffbench datasets generate {TINY_ID}"):
        load_dataset(TINY_ID)
    with pytest.raises(DatasetNotFoundError, match="minari download mujoco/hopper/medium-v0"):
        load_dataset("mujoco/hopper/medium-v0")


def test_unrecoverable_env_is_a_clear_error(dataset_copy):
    meta_path = dataset_copy / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    spec = json.loads(meta["eval_env_spec"])
    spec["entry_point"] = "no_such_package.envs:Missing"
    meta["eval_env_spec"] = json.dumps(spec)
    meta_path.write_text(json.dumps(meta))
    ds = load_dataset(str(dataset_copy))  # the data itself still loads
    with pytest.raises(DatasetError, match=rf"{TINY_ID}: its evaluation environment's entry point .*no_such_package"):
        ds.make_env()  # code from elsewhere is not imported unless trusted
    with pytest.raises(DatasetError, match=rf"{TINY_ID}: cannot recover its environment .*no_such_package"):
        ds.make_env(trust=True)
    assert "not checked: its entry point 'no_such_package.envs:Missing'" in verify(str(dataset_copy))["eval_env"]
    assert "cannot recover" in verify(str(dataset_copy), make_env="always")["eval_env"]


def test_nan_in_minari_dataset(tmp_path, monkeypatch, dataset_copy):
    import h5py

    with h5py.File(dataset_copy / "data" / "main_data.hdf5", "r+") as f:
        f["episode_0/rewards"][1] = np.nan
    with pytest.raises(DatasetError, match="episode 0: rewards holds 1 NaN/inf value.*row 1"):
        load_dataset(str(dataset_copy))


def test_not_a_dataset_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="not a Minari dataset directory"):
        load_dataset(str(tmp_path / "empty"))


def test_unknown_name_lists_known_ids(tiny_pointmaze):
    with pytest.raises(DatasetError, match=rf"unknown dataset 'hopper'.*{TINY_ID}"):
        load_dataset("hopper")


def test_directory_copy_keeps_working_after_move(tiny_pointmaze, dataset_copy, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.move(dataset_copy, moved)
    assert len(load_dataset(str(moved)).transitions) == TINY_STEPS


def test_an_empty_datasets_path_is_one_clear_error(monkeypatch, capsys):
    from bench.cli import main

    monkeypatch.setenv("MINARI_DATASETS_PATH", "")
    assert main(["datasets", "info", "diffbench/pointmaze/umaze-dense-small-v0"]) != 0
    err = capsys.readouterr().err
    assert "MINARI_DATASETS_PATH is set but empty" in err and "Traceback" not in err


def test_the_generation_pins_are_the_installs_and_every_card_records_them(tiny_pointmaze):
    """Issue 35: a dataset regenerated under another mujoco held other bytes. The simulator is pinned in pyproject to
    the version GENERATION_PINS names, and each card records the pins and any installed version off them."""
    import re

    from envs.catalog import GENERATION_PINS, version_mismatches

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert re.search(r'"mujoco==([^"]+)"', pyproject).group(1) == GENERATION_PINS["mujoco"]
    card = load_dataset(tiny_pointmaze).metadata["card"]
    assert card["pinned_versions"] == GENERATION_PINS and card["versions_off_pin"] == version_mismatches()
    assert card["versions"]["mujoco"] == GENERATION_PINS["mujoco"]  # this install is the pinned one
