"""Locomotion datasets: SAC behaviour policies trained, resumed and scored along the curve; the recipes
rolled out from picked checkpoints, deterministically; bad policy files and envs are one clear error."""

import importlib.metadata as md
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from bench.cli import main
from bench.harness.store import ResultsStore, RunResult
from envs import DatasetError
from envs.locomotion.actor import ActorSpec, SquashedGaussianActor, check_spaces, from_sb3, load_actor, save_actor
from envs.locomotion.recipes import RECIPES, _replay_segments, pick_policies
from envs.locomotion.sac import SacSettings, read_curve, train
from .generated import fingerprint_made_under

TINY = SacSettings(steps=400, checkpoint_every=100, state_every=200, eval_episodes=1, learning_starts=100)


@pytest.fixture(scope="module")
def sac_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sac") / "hopper"
    train("hopper", out, TINY, log=lambda _: None)
    return out


def test_sac_saves_a_scored_actor_every_checkpoint_and_resumes_to_more_steps(sac_run, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where SB3 would put its log folders
    (tmp_path / "tmp").mkdir()
    curve = read_curve(sac_run)
    assert [r["step"] for r in curve] == [0, 100, 200, 300, 400]
    actor, card = load_actor(sac_run / curve[-1]["file"])
    assert card["training_steps"] == 400 and card["env_id"] == "Hopper-v5" and "v2" in card["d4rl_references"]["note"]
    assert np.isfinite(card["d4rl_score"]) and (sac_run / "state" / "replay.npz").is_file()
    # more steps continue from the saved learner state; other settings are another run
    out = tmp_path / "run"
    train("hopper", out, TINY, log=lambda _: None)
    more = train("hopper", out, SacSettings(**{**TINY.__dict__, "steps": 600}), log=lambda _: None)
    assert [r["step"] for r in more] == [0, 100, 200, 300, 400, 500, 600]
    assert load_actor(out / more[-1]["file"])[1]["resumed"]
    with pytest.raises(DatasetError, match="another seed"):
        train("hopper", out, SacSettings(**{**TINY.__dict__, "seed": 1}))
    assert not list((tmp_path / "tmp").iterdir()), "training left SB3 log folders behind"


def test_our_actor_acts_as_the_sb3_actor_it_was_read_from():
    from stable_baselines3 import SAC

    model = SAC("MlpPolicy", gym.make("Hopper-v5"), seed=0, device="cpu")
    actor = from_sb3(model, "Hopper-v5")
    obs = np.random.default_rng(0).standard_normal((5, 11))
    ours = actor.act(obs)
    theirs, _ = model.predict(obs, deterministic=True)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    with torch.no_grad():  # the stochastic action: tanh(mu + std z) with SB3's log-std bounds
        mean, log_std, _ = model.actor.get_action_dist_params(torch.as_tensor(obs, dtype=torch.float32))
    z = np.random.default_rng(1).standard_normal((5, 3))
    expected = np.tanh(mean.numpy() + np.exp(log_std.numpy()) * z)
    np.testing.assert_allclose(actor.act(obs, np.random.default_rng(1)), expected, atol=1e-5)


def test_the_float64_actor_acts_as_the_torch_actor(sac_run):
    actor, _ = load_actor(sac_run / "checkpoints" / "step-0000400.pt")
    portable = actor.portable()
    obs = np.random.default_rng(0).standard_normal((6, 11))
    np.testing.assert_allclose(portable.act(obs), actor.act(obs), atol=1e-5)
    np.testing.assert_allclose(portable.act(obs, np.random.default_rng(1)), actor.act(obs, np.random.default_rng(1)),
                               atol=1e-5)  # the same noise draws, in the same order
    one = portable.act(obs[0], np.random.default_rng(2))
    assert one.shape == (3,) and one.dtype == np.float32
    np.testing.assert_allclose(one, actor.act(obs[0], np.random.default_rng(2)), atol=1e-5)


def test_rollouts_do_not_follow_torchs_cpu_kernels(sac_run, tmp_path):
    """Intel and AMD CPUs run torch's matrix products on other MKL kernels; the data must not see which. Here
    the kernels are moved on one CPU: with the torch actor (the -medium-small recipes) these settings moved
    4,000 steps of hopper's committed medium to three different fingerprints."""
    dest = tmp_path / "policies"
    index = pick_policies("hopper", sac_run, dest, replay_every=100, heldout_episodes=0)
    (dest / "index.json").write_text(json.dumps({**index, "medium": "step-0000300.pt", "expert": "step-0000400.pt"}))
    dataset = "diffbench/hopper/medium-expert-small-v0"
    assert RECIPES[dataset].actor_math == "float64" and RECIPES["diffbench/hopper/medium-small-v0"].actor_math == "torch"
    made = {fingerprint_made_under(s, tmp_path / str(i), dataset, steps=300, seed=0, progress=False,
                                   policies=str(dest))
            for i, s in enumerate([{}, {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"},
                                   {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}])}
    assert len(made) == 1, made


def test_the_recipes_roll_out_deterministically_from_picked_checkpoints(sac_run, tmp_path, session_root, capsys):
    from envs.catalog import generate, load_dataset, verify
    from envs.minari_source import pinned_root

    dest = tmp_path / "policies"
    index = pick_policies("hopper", sac_run, dest, replay_every=100, heldout_episodes=3)
    assert index["random"] == "step-0000000.pt" and index["replay"][0] == {"file": "step-0000000.pt", "from": 0, "to": 100}
    assert all(index[role] in index["cards"] for role in ("medium", "expert"))
    card = (dest / "CARD.md").read_text()
    assert "| step-0000000.pt | random |" in card and "stable-baselines3" in card and "v2 envs" in card
    # medium and expert read again on fresh episodes (the expert's training reading is the best of many, so high)
    for role in ("medium", "expert"):
        fresh = index["cards"][index[role]]["heldout"]
        assert fresh["episodes"] == 3 and fresh["env_seeds"] == "20000+i" and np.isfinite(fresh["d4rl_score"])
    assert "heldout" not in index["cards"][index["random"]] and "on 3 fresh episodes" in card
    with pinned_root(session_root):
        sums = []
        for _ in range(2):
            generate("diffbench/hopper/medium-replay-small-v0", steps=300, seed=3, overwrite=True, progress=False,
                     policies=dest)
            sums.append(verify("diffbench/hopper/medium-replay-small-v0")["checksum"])
        assert sums[0] == sums[1]
        assert verify("diffbench/hopper/medium-replay-small-v0", make_env="never")["actor_math"] == "float64"
        # runs in a store trained on the earlier, torch-rolled bytes: `verify --against` says the recipe moved
        store = ResultsStore(tmp_path / "store")
        store.record(RunResult(run_id="before", algorithm="bc", dataset="diffbench/hopper/medium-replay-small-v0",
                               seed=0, preset="cpu", config={}, started=0.0, finished=1.0, dataset_content="torch-made",
                               packages={"mujoco": md.version("mujoco")}, hardware={"description": "AMD EPYC"}))
        assert main(["datasets", "verify", "diffbench/hopper/medium-replay-small-v0", "--no-env", "--against",
                     str(tmp_path / "store")]) == 1
        said = capsys.readouterr().out
        assert "acted in numpy float64" in said and "--other-data" in said and "MKL" not in said
        ds = load_dataset("diffbench/hopper/medium-replay-small-v0")
        card = ds.metadata["card"]
        assert card["reward_transform"] == "locomotion" and card["approximation"] and card["steps"] == len(ds.transitions)
        assert ds.transitions.obs_dim == 11 and ds.transitions.action_dim == 3
        # a training that stopped at medium has no expert to roll out: one clear error, not medium data named expert
        index_file, files = dest / "index.json", sorted(index["cards"])
        index_file.write_text(json.dumps({**index, "expert": index["medium"]}))
        with pytest.raises(DatasetError, match="reach no expert"):
            generate("diffbench/hopper/expert-small-v0", steps=150, seed=3, progress=False, policies=dest)
        index_file.write_text(json.dumps({**index, "medium": files[0], "expert": files[-1]}))
        generate("diffbench/hopper/medium-expert-small-v0", steps=150, seed=3, progress=False, policies=dest)
        assert len(load_dataset("diffbench/hopper/medium-expert-small-v0").transitions) == 300


def test_a_later_pick_keeps_the_medium_the_datasets_were_made_from(sac_run, tmp_path):
    """Training on towards an expert must not move medium (and with it the replay and every dataset made)."""
    dest = tmp_path / "policies"
    first = pick_policies("hopper", sac_run, dest, replay_every=100, medium_step=200, heldout_episodes=0)
    assert first["medium"] == "step-0000200.pt" and first["medium_choice"] == "chosen"
    assert [r["to"] for r in first["replay"]] == [100, 200]
    again = pick_policies("hopper", sac_run, dest, replay_every=100, heldout_episodes=0)
    assert again["medium"] == "step-0000200.pt" and again["medium_choice"] == "kept"
    assert again["replay"] == first["replay"] and "kept from the earlier pick" in (dest / "CARD.md").read_text()
    # the same run's medium rewritten (training resumed from before it): one clear error, not a silent new pick
    (dest / "step-0000200.pt").write_bytes(b"the policy the datasets were made from")
    with pytest.raises(DatasetError, match="step-0000200.pt differ.*--keep-medium.*--medium-step"):
        pick_policies("hopper", sac_run, dest, replay_every=100)
    # --keep-medium: the held medium and replay stay byte for byte; only the expert comes from the run
    (dest / "step-0009999.pt").write_bytes(b"a file no role names any more")
    branched = pick_policies("hopper", sac_run, dest, replay_every=100, keep_medium=True, heldout_episodes=0)
    assert branched["medium"] == "step-0000200.pt" and branched["medium_choice"] == "branched"
    assert branched["replay"] == first["replay"] and branched["shared_until"] == 100
    assert (dest / "step-0000200.pt").read_bytes() == b"the policy the datasets were made from"
    assert branched["cards"]["step-0000200.pt"] == first["cards"]["step-0000200.pt"]
    later = {Path(r["file"]).name: r["return_mean"] for r in read_curve(sac_run) if r["step"] > 200}
    later["step-0000200.pt"] = first["cards"]["step-0000200.pt"]["return_mean"]
    assert branched["expert"] == max(later, key=later.get)  # the best of the kept medium and the later checkpoints
    assert not (dest / "step-0009999.pt").exists(), "a checkpoint no role names stayed behind"
    assert sorted(p.name for p in dest.glob("step-*.pt")) == sorted(branched["cards"])
    assert "agree up to step 100, then branch" in (dest / "CARD.md").read_text()
    # another run's (seed's) medium is not this run's to keep
    index_file = dest / "index.json"
    index_file.write_text(json.dumps({**json.loads(index_file.read_text()), "seed": 7}))
    assert pick_policies("hopper", sac_run, dest, replay_every=100)["medium_choice"] == "closest"
    with pytest.raises(DatasetError, match="no trained checkpoint at step 150"):
        pick_policies("hopper", sac_run, tmp_path / "other", medium_step=150, replay_every=100)


def test_the_replay_follows_training_warm_up_first_then_each_checkpoint_scaled_alike():
    index = {"learning_starts": 150, "replay": [{"file": "a", "from": 0, "to": 100}, {"file": "b", "from": 100, "to": 200},
                                                  {"file": "c", "from": 200, "to": 400}]}
    assert _replay_segments(index, 10_000) == [(None, 100), (None, 50), ("b", 50), ("c", 200)]
    assert _replay_segments(index, 200) == [(None, 50), (None, 25), ("b", 25), ("c", 100)]


def test_bad_policy_files_and_envs_are_one_clear_error(sac_run, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a tensor file")
    with pytest.raises(DatasetError, match="cannot read the policy weights"):
        load_actor(bad)
    with pytest.raises(DatasetError, match="no policy weights"):
        load_actor(tmp_path / "missing.pt")
    actor, _ = load_actor(sac_run / "checkpoints" / "step-0000100.pt")
    with pytest.raises(DatasetError, match="observations of dim 11"):
        check_spaces(actor.spec, gym.make("Walker2d-v5"), "policy")
    wrong = SquashedGaussianActor(ActorSpec("Hopper-v5", 11, 3))
    save_actor(wrong, tmp_path / "w.pt", {})
    blob = torch.load(tmp_path / "w.pt", weights_only=True)
    blob["obs_dim"] = 12
    torch.save(blob, tmp_path / "w.pt")
    with pytest.raises(DatasetError, match="do not fit"):
        load_actor(tmp_path / "w.pt")
    with pytest.raises(DatasetError, match="unknown locomotion env 'ant'"):
        train("ant", tmp_path / "ant", TINY)
    assert "diffbench/walker2d/expert-small-v0" in RECIPES


def test_a_dataset_in_minaris_official_mujoco_format_loads_with_its_references(session_root):
    """Written by Minari's own API under an official id, from a v5 env (as Minari's `mujoco/*` datasets; their
    DataCollector writes the same format but needs JAX, which diffbench does not install)."""
    import minari
    from minari.data_collector import EpisodeBuffer

    from envs.catalog import default_reward_transform, load_dataset
    from envs.minari_source import pinned_root

    env = gym.make("Hopper-v5")
    rng = np.random.default_rng(0)
    buffers = []
    while sum(len(b.rewards) for b in buffers) < 120:
        obs, _ = env.reset(seed=len(buffers))
        ep = {"obs": [obs], "act": [], "rew": [], "term": [], "trunc": []}
        done = False
        while not done:
            a = rng.uniform(-1, 1, 3).astype(np.float32)
            obs, r, terminated, truncated, _ = env.step(a)
            for k, v in zip(("obs", "act", "rew", "term", "trunc"), (obs, a, r, terminated, truncated)):
                ep[k].append(v)
            done = terminated or truncated
        buffers.append(EpisodeBuffer(id=len(buffers), observations=np.stack(ep["obs"]), actions=np.stack(ep["act"]),
                                     rewards=np.asarray(ep["rew"]), terminations=np.asarray(ep["term"]),
                                     truncations=np.asarray(ep["trunc"]), infos={}))
    with pinned_root(session_root):
        minari.create_dataset_from_buffers("mujoco/hopper/medium-v0", buffers, env=env, eval_env="Hopper-v5",
                                           algorithm_name="random", ref_min_score=-20.3, ref_max_score=3234.3)
        ds = load_dataset("mujoco/hopper/medium-v0", reward_transform=default_reward_transform("mujoco/hopper/medium-v0"))
    assert ds.reward_transform == "locomotion" and len(ds.transitions) == sum(len(b.rewards) for b in buffers)
    assert ds.transitions.terminals.sum() >= 1  # a random hopper falls: terminals come from the env
    assert ds.normalized_score(3234.3) == pytest.approx(100.0) and ds.make_env().spec.id == "Hopper-v5"
    # the data's own score, the reference behaviour cloning should reach: its episodes' raw returns, normalised
    # (the reward transform the run trains on does not change it)
    raw = np.array([float(np.sum(b.rewards)) for b in buffers])
    score, how = ds.data_score()
    assert score == pytest.approx(float(np.mean(100 * (raw + 20.3) / (3234.3 + 20.3))), rel=1e-5)
    assert f"{len(buffers)} episodes" in how


def test_mujoco_warnings_come_once_through_python_not_per_env_on_stderr(capfd):
    """gymnasium's HalfCheetah asset makes MuJoCo warn at every build; a run's log must not carry one line per env."""
    import warnings

    import mujoco

    from envs.mujoco_warnings import MujocoWarning, quiet_mujoco_warnings

    before = mujoco.get_mju_user_warning()
    try:
        mujoco.set_mju_user_warning(None)
        quiet_mujoco_warnings()
        with pytest.warns(MujocoWarning, match="raised here"):
            mujoco.get_mju_user_warning()("raised here\n")
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            for _ in range(3):
                gym.make("HalfCheetah-v5").close()
        assert "WARNING:" not in capfd.readouterr().err
        mine = mujoco.get_mju_user_warning()
        quiet_mujoco_warnings()  # a handler already there is kept
        assert mujoco.get_mju_user_warning() is mine
    finally:
        mujoco.set_mju_user_warning(before)
