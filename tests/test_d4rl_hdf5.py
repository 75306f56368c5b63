from pathlib import Path

import h5py
import numpy as np
import pytest

from envs import DatasetError, DatasetNotFoundError, load_dataset

HOPPER_OBS, HOPPER_ACT = 11, 3


def write_h5(path: Path, n: int = 50, drop: tuple[str, ...] = (), next_obs: bool = False, **override) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "observations": rng.normal(size=(n, HOPPER_OBS)),
        "actions": rng.uniform(-1, 1, size=(n, HOPPER_ACT)).astype(np.float32),
        "rewards": rng.normal(size=n),
        "terminals": np.zeros(n, bool),
        "timeouts": np.zeros(n, bool),
    }
    arrays["terminals"][19:20] = True  # (for n > 19, 39: an empty file stays empty)
    arrays["timeouts"][39:40] = True
    if next_obs:
        arrays["next_observations"] = rng.normal(size=(n, HOPPER_OBS))
    arrays.update(override)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            if k not in drop:
                f.create_dataset(k, data=v)
    return path


def test_loads_legacy_file_with_reference_scores_and_env(tmp_path):
    ds = load_dataset(str(write_h5(tmp_path / "hopper_medium-v2.hdf5")))
    assert ds.id == "hopper-medium-v2" and ds.source == "d4rl-hdf5"
    # 50 steps: terminal at 19 kept, timeout at 39 dropped, file tail's last step dropped
    assert len(ds.transitions) == 48 and ds.transitions.num_episodes == 3
    assert ds.metadata["dropped_steps_without_successor"] == 2
    # D4RL's table: hopper random -20.272305, expert 3234.3
    assert ds.normalized_score(3234.3) == pytest.approx(100.0)
    assert ds.normalized_score(-20.272305) == pytest.approx(0.0)
    env = ds.make_env()
    obs, _ = env.reset(seed=0)
    assert obs.shape == (HOPPER_OBS,)


def test_legacy_id_is_found_in_d4rl_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    write_h5(tmp_path / "hopper_medium-v2.hdf5", next_obs=True)
    ds = load_dataset("hopper-medium-v2")
    assert len(ds.transitions) == 50 and ds.ref_max_score == 3234.3


def test_missing_legacy_file_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=r"hopper_medium-v2\.hdf5 in .*set D4RL_DATASET_DIR"):
        load_dataset("hopper-medium-v2")


def test_missing_key(tmp_path):
    path = write_h5(tmp_path / "x.hdf5", drop=("timeouts",))
    with pytest.raises(DatasetError, match=r"x\.hdf5: missing key\(s\) timeouts"):
        load_dataset(str(path))


def test_mismatched_lengths(tmp_path):
    path = write_h5(tmp_path / "x.hdf5", rewards=np.zeros(49))
    with pytest.raises(DatasetError, match="different lengths .*rewards=49"):
        load_dataset(str(path))


@pytest.mark.parametrize("override,message", [
    ({"rewards": np.zeros((50, 2))}, r"rewards has shape \(50, 2\); expected one value per step"),
    ({"rewards": np.array([b"x"] * 50)}, r"rewards holds \|S1 values, not numbers"),
])
def test_rewards_that_are_not_one_number_per_step(tmp_path, override, message):
    path = write_h5(tmp_path / "x.hdf5", **override)
    with pytest.raises(DatasetError, match=message):
        load_dataset(str(path))
    assert len(load_dataset(str(write_h5(tmp_path / "y.hdf5", rewards=np.zeros((50, 1))))).transitions) > 0  # (N, 1) is fine


def test_observations_stored_as_a_group(tmp_path):
    path = write_h5(tmp_path / "x.hdf5", drop=("observations",))
    with h5py.File(path, "a") as f:
        f.create_group("observations").create_dataset("position", data=np.zeros((50, 3)))
    with pytest.raises(DatasetError, match="observations is an HDF5 group, not an array"):
        load_dataset(str(path))


@pytest.mark.parametrize("key", ["observations", "rewards"])
def test_nan_or_inf(tmp_path, key):
    path = write_h5(tmp_path / "x.hdf5")
    with h5py.File(path, "r+") as f:
        data = f[key][()]
        data[7] = np.inf if key == "rewards" else np.nan
        f[key][...] = data
    with pytest.raises(DatasetError, match=rf"{key} holds \d+ NaN/inf value.*row 7"):
        load_dataset(str(path))


def test_actions_outside_bounds(tmp_path):
    acts = np.zeros((50, HOPPER_ACT), np.float32)
    acts[3, 1] = 1.5
    path = write_h5(tmp_path / "hopper_medium-v2.hdf5", actions=acts)
    with pytest.raises(DatasetError, match="1 action.* outside the action space .*row 3"):
        load_dataset(str(path))
    acts[3, 1] = 1.0005  # within the default tolerance of 1e-3
    write_h5(tmp_path / "hopper_medium-v2.hdf5", actions=acts)
    assert len(load_dataset(str(path)).transitions) == 48


def test_action_dim_mismatch_with_env(tmp_path):
    path = write_h5(tmp_path / "hopper_medium-v2.hdf5", actions=np.zeros((50, 2), np.float32))
    with pytest.raises(DatasetError, match="actions have 2 dims but Hopper-v5 takes 3"):
        load_dataset(str(path))


def test_corrupt_file(tmp_path):
    path = tmp_path / "x.hdf5"
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(DatasetError, match="not a readable HDF5 file"):
        load_dataset(str(path))


def test_family_without_env_loads_but_cannot_evaluate(tmp_path):
    path = write_h5(tmp_path / "antmaze_umaze-v2.hdf5")
    ds = load_dataset(str(path))
    assert ds.ref_min_score == 0.0 and ds.ref_max_score == 1.0
    with pytest.raises(DatasetError, match="no evaluation environment"):
        ds.make_env()
