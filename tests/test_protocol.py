"""The published protocol around a run: reward transforms, per-domain paper settings, the guidance scale
chosen on held-out episodes, and the bad inputs that must stop a run before any training is paid for."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from bench.cli import main
from bench.harness.evaluation import EPISODE_CAP, check_eval_env, evaluate
from bench.harness.executors import run_all
from bench.harness.runner import CURVE_POINTS, CURVE_SEED_OFFSET, SELECTION_SEED_OFFSET, RunSpec
from bench.harness.store import ResultsStore, RunResult
from envs import DatasetError, catalog, load_dataset
from envs.families import default_reward_transform, family
from policies.errors import ConfigError

from .conftest import TINY_ID
from .test_d4rl_hdf5 import write_h5

TINY = {"device": "cpu", "behaviour_steps": 60, "q_steps": 40, "energy_steps": 50}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- item 1: reward transforms

@pytest.mark.parametrize("dataset,fam,transform", [
    ("hopper-medium-v2", "locomotion", "locomotion"), ("mujoco/halfcheetah/expert-v0", "locomotion", "locomotion"),
    ("antmaze-umaze-v0", "antmaze", "antmaze"), ("D4RL/antmaze/large-play-v1", "antmaze", "antmaze"),
    ("D4RL/pointmaze/umaze-v2", "pointmaze", "none"), ("diffbench/pointmaze/umaze-small-v0", "pointmaze", "none"),
    ("diffbench/hopper/medium-v0", "locomotion", "none")])
def test_each_family_gets_its_published_transform(dataset, fam, transform):
    assert family(dataset) == fam and default_reward_transform(dataset) == transform
    assert default_reward_transform(dataset, {"reward_transform": "locomotion"}) == "locomotion"  # a recipe's own


def test_a_d4rl_locomotion_run_trains_on_transformed_rewards_and_records_it(capsys, tmp_path, monkeypatch):
    d4rl = tmp_path / "d4rl"
    monkeypatch.setenv("D4RL_DATASET_DIR", str(d4rl))
    write_h5(d4rl / "hopper_medium-v2.hdf5", n=300, next_obs=True)
    results = tmp_path / "runs"
    code, out, err = run(capsys, "run", "qgpo", "hopper-medium-v2", "--preset", "tiny", *[f"{k}={v}" for k, v in TINY.items()],
                         "--episodes", "2", "--guidance-scales", "0", "--results", results, "--no-progress")
    assert code == 0, out + err
    assert "protocol: rewards locomotion" in out
    row = ResultsStore(results).table("runs").iloc[0]
    assert json.loads(row.config)["protocol"]["reward_transform"] == "locomotion"
    # the transform is part of the run's identity: asking for raw rewards is another run
    base = RunSpec("qgpo", "hopper-medium-v2", preset="tiny", overrides=TINY, episodes=2, guidance_scales=(0.0,))
    assert base.transform() == "locomotion" and row.run_id == base.run_id()
    raw = RunSpec("qgpo", "hopper-medium-v2", preset="tiny", overrides=TINY, episodes=2, guidance_scales=(0.0,),
                  reward_transform="none")
    assert raw.run_id() != base.run_id()
    # what training saw: rewards x 1000 / (max - min episode return)
    plain, scaled = load_dataset("hopper-medium-v2"), load_dataset("hopper-medium-v2", reward_transform="locomotion")
    returns = plain.transitions.episode_returns()
    ratio = scaled.transitions.rewards / plain.transitions.rewards
    assert float(ratio.mean()) == pytest.approx(1000 / float(returns.max() - returns.min()), rel=1e-5)


# ---------------------------------------------------------------- item 2: the paper preset per domain

def test_the_paper_preset_follows_the_official_per_domain_settings():
    hopper = RunSpec("qgpo", "hopper-medium-v2", preset="paper")
    antmaze = RunSpec("qgpo", "antmaze-umaze-v0", preset="paper")
    assert hopper.config().support_m == 16 and antmaze.config().support_m == 32
    assert hopper.scales() == (0.0, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0)
    assert antmaze.scales() == (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)
    assert hopper.config().interleave and not RunSpec("qgpo", "hopper-medium-v2", preset="cpu").config().interleave
    # a user's own override wins over the domain's, and other presets keep their own settings
    assert RunSpec("qgpo", "antmaze-umaze-v0", preset="paper", overrides={"support_m": 8}).config().support_m == 8
    assert RunSpec("qgpo", "antmaze-umaze-v0", preset="cpu").scales() is None
    assert RunSpec("bc", "antmaze-umaze-v0", preset="paper").scales() is None


def test_interleaving_needs_one_batch_for_both_updates():
    from policies import registry

    with pytest.raises(ConfigError, match="energy_batch .* must equal q_batch"):
        registry.make_config("qgpo", "paper", {"energy_batch": 128})
    with pytest.raises(ConfigError, match="energy_steps >= q_steps"):
        registry.make_config("qgpo", "tiny", {"interleave": True, "energy_batch": 32, "q_steps": 60, "energy_steps": 50})


# ---------------------------------------------------------------- items 3 and 6: scale selection, repeated scales

def test_repeated_scales_are_one_scale():
    a = RunSpec("qgpo", TINY_ID, preset="tiny", guidance_scales=(0, 1, 1.0))
    assert a.scales() == (0.0, 1.0)
    assert a.run_id() == RunSpec("qgpo", TINY_ID, preset="tiny", guidance_scales=(0.0, 1.0)).run_id()


def test_the_scale_is_chosen_on_held_out_episodes_and_scored_on_fresh_ones(tiny_pointmaze, tmp_path):
    spec = RunSpec("qgpo", TINY_ID, preset="tiny", overrides=TINY, episodes=3, guidance_scales=(0.0, 1.0, 1),
                   selection_episodes=2)
    out = run_all([spec], tmp_path)
    assert out["finished"], out["failed"][0].error if out["failed"] else out
    store = ResultsStore(tmp_path)
    runs = store.table("runs")
    ev = store.table("evaluations")
    selection = ev[ev.stage == "selection"].sort_values("guidance_scale")
    final = ev[ev.stage == "final"].sort_values("guidance_scale")
    assert selection.guidance_scale.tolist() == [0.0, 1.0] and (selection.episodes == 2).all()
    assert final.guidance_scale.tolist() == [0.0, 1.0] and (final.episodes == 3).all()
    best = selection.loc[selection.score_mean.idxmax(), "guidance_scale"]
    assert runs.selected_guidance_scale.iloc[0] == best
    assert json.loads(runs.config.iloc[0])["protocol"]["scale_selection"] == "held-out"
    assert json.loads(runs.hardware.iloc[0])["device"] == "cpu" and runs.code_version.iloc[0]  # what produced it
    # the selection episodes are other episodes: their env seeds differ from the reported ones
    ds = load_dataset(TINY_ID)

    class Still:
        def __init__(self):
            self.first = None

        def act(self, obs):
            self.first = obs.copy() if self.first is None else self.first
            return np.zeros((len(obs), 2), np.float32)

        def seed(self, seed):
            pass

    from bench.harness.runner import SELECTION_SEED_OFFSET

    reported, held_out = Still(), Still()
    evaluate(reported, ds, episodes=2, seed=0, max_steps=1)
    evaluate(held_out, ds, episodes=2, seed=SELECTION_SEED_OFFSET, max_steps=1)
    assert not np.array_equal(reported.first, held_out.first)  # other start states
    # learning curves: on by default beyond the tiny and quick presets, on env seeds of their own
    assert RunSpec("bc", TINY_ID, preset="cpu").protocol()["curve_points"] == CURVE_POINTS
    assert "curve_points" not in RunSpec("bc", TINY_ID, preset="tiny").protocol()  # ids from before curves kept
    assert len({SELECTION_SEED_OFFSET, CURVE_SEED_OFFSET, 0}) == 3
    # one scale: nothing to choose
    single = RunSpec("qgpo", TINY_ID, preset="tiny", overrides=TINY, episodes=3, guidance_scales=(1.0,))
    assert single.selecting() == 0 and single.protocol()["scale_selection"] == "none"


# ---------------------------------------------------------------- items 5 and 7: bad input before training

@pytest.mark.parametrize("argv,message", [
    (["--eval-every", "-1"], "eval_every must be an integer >= 0"),
    (["--curve-points", "-1"], "curve_points must be an integer >= 0"),
    (["--checkpoint-every", "-5"], "checkpoint_every must be an integer >= 0"),
    (["--episodes", "0"], "episodes must be an integer >= 1"),
    (["--seed", "-1"], "seed must be an integer >= 0"),
    (["--guidance-scales", ","], "--guidance-scales needs at least one value"),
    (["--guidance-scales", "0,one"], "--guidance-scales takes comma-separated numbers"),
    (["--guidance-scales", "0,-1"], "guidance scales must be finite numbers >= 0"),
    (["beta=.nan"], "beta must be a finite number"),
    (["beta_q=.inf"], "beta_q must be a finite number"),
])
def test_bad_run_settings_are_one_line_errors_before_anything_is_written(capsys, tiny_pointmaze, tmp_path, argv, message):
    code, out, err = run(capsys, "run", "qgpo", TINY_ID, "--preset", "tiny", *argv, "--results", tmp_path / "r")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("algorithm", ["qgpo", "bc"])
def test_every_config_refuses_a_negative_seed(algorithm):
    from policies import registry

    with pytest.raises(ConfigError, match="seed must be >= 0, got -3"):
        registry.make_config(algorithm, "tiny", {"seed": -3})


@pytest.mark.parametrize("argv,message", [
    (["quick", "--seeds", "0,x"], "--seeds takes comma-separated integers"),
    (["toy", "floor", "--betas", "3,ten"], "--betas takes comma-separated numbers"),
    (["toy", "exactness", "--seeds", "a"], "--seeds takes comma-separated integers"),
])
def test_non_numeric_lists_are_one_line_errors(capsys, tiny_pointmaze, tmp_path, argv, message):
    code, out, err = run(capsys, *argv, "--out" if argv[0] == "toy" else "--results", tmp_path / "r")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_sweep_with_repeated_or_nan_values(capsys, tiny_pointmaze, tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(f"algorithms: [qgpo]\ndatasets: [{TINY_ID}]\npreset: tiny\nguidance_scales: [1, 1.0]\n"
                    "overrides: {beta: .nan}\n")
    code, _, err = run(capsys, "sweep", path, "--results", tmp_path / "r")
    assert code == 2 and "beta must be a finite number" in err
    from bench.harness.sweep import load_sweep

    path.write_text(f"algorithms: [qgpo]\ndatasets: [{TINY_ID}]\npreset: tiny\nguidance_scales: [1, 1.0, 0]\n")
    assert load_sweep(path).runs()[0].scales() == (1.0, 0.0)


@pytest.mark.parametrize("name,obs_dim,message", [
    ("antmaze_umaze-v0.hdf5", 29, "no evaluation environment is known"),
    ("hopper_medium-v2.hdf5", 12, "Hopper-v5 observes 11 values, the file 12"),
])
def test_a_dataset_without_a_matching_env_fails_before_training(capsys, tmp_path, name, obs_dim, message):
    rng = np.random.default_rng(0)
    path = write_h5(tmp_path / name, n=60, observations=rng.normal(size=(60, obs_dim)),
                    actions=rng.uniform(-1, 1, size=(60, 8 if "antmaze" in name else 3)).astype(np.float32))
    code, out, err = run(capsys, "run", "qgpo", path, "--preset", "tiny", "--results", tmp_path / "r")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "r").exists()  # nothing trained, nothing written


def test_hdf5_edge_cases(tmp_path):
    with pytest.raises(DatasetError, match="holds no transitions"):
        load_dataset(str(write_h5(tmp_path / "a" / "hopper_medium-v2.hdf5", n=0, terminals=np.zeros(0, bool),
                                  timeouts=np.zeros(0, bool))))
    rng = np.random.default_rng(1)
    with pytest.raises(DatasetError, match="next_observations are 12 wide but observations 11"):
        load_dataset(str(write_h5(tmp_path / "b" / "hopper_medium-v2.hdf5", next_observations=rng.normal(size=(50, 12)))))
    flat = write_h5(tmp_path / "c" / "pen_human-v1.hdf5", actions=rng.uniform(-1, 1, size=50).astype(np.float32))
    ds = load_dataset(str(flat))  # 1-D actions: one action dimension, as the Minari path reads them
    assert ds.transitions.action_dim == 1


@pytest.mark.filterwarnings("ignore::UserWarning")  # Minari's advice on optional metadata
def test_a_discrete_action_space_is_one_clear_error(tmp_path, monkeypatch):
    import gymnasium as gym
    import minari

    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    observations, actions = [obs], []
    for _ in range(10):
        actions.append(env.action_space.sample())
        observations.append(env.step(actions[-1])[0])
    buffer = EpisodeBuffer(id=0, seed=0, observations=np.stack(observations), actions=np.asarray(actions),
                           rewards=np.ones(10), terminations=np.zeros(10, bool), truncations=np.eye(10, dtype=bool)[-1])
    minari.create_dataset_from_buffers("test/cartpole-v0", [buffer], env=env, algorithm_name="random")
    with pytest.raises(DatasetError, match="acts in a Discrete space .* need a Box action space"):
        load_dataset("test/cartpole-v0")


def test_an_env_without_a_step_limit_caps_evaluation_episodes(tiny_pointmaze):
    import dataclasses

    ds = load_dataset(TINY_ID)
    assert check_eval_env(ds) == ds.eval_env_spec.max_episode_steps
    unlimited = dataclasses.replace(ds, eval_env_spec=dataclasses.replace(ds.eval_env_spec, max_episode_steps=None))
    assert check_eval_env(unlimited) == EPISODE_CAP


@pytest.mark.parametrize("where", ["runs.v2", "file/sub"])
def test_results_directories_with_dots_or_that_cannot_be_made(capsys, tiny_pointmaze, tmp_path, where):
    (tmp_path / "file").write_text("not a directory")
    results = tmp_path / where
    code, out, err = run(capsys, "run", "qgpo", TINY_ID, "--preset", "tiny", *[f"{k}={v}" for k, v in TINY.items()],
                         "--episodes", "1", "--guidance-scales", "0", "--results", results, "--no-progress")
    if where == "runs.v2":
        assert code == 0 and (results / "results.sqlite").is_file(), out + err
    else:
        assert code == 2 and "cannot create the results directory" in err and len(err.strip().splitlines()) == 1


def test_export_and_report_do_not_create_a_store(capsys, tmp_path):
    code, _, err = run(capsys, "results", "export", "--results", tmp_path / "typo")
    assert code == 2 and "no results store in" in err and not (tmp_path / "typo").exists()
    ResultsStore(tmp_path / "s")
    code, _, err = run(capsys, "report", "--results", tmp_path / "s", "--format", "md,pdf")
    assert code == 2 and "unknown report format(s) pdf" in err


# ---------------------------------------------------------------- items 8 and 9: two drivers, run identity

def test_a_failure_never_replaces_a_finished_row(tmp_path):
    store = ResultsStore(tmp_path)
    ok = RunResult(run_id="r", algorithm="bc", dataset="d", seed=0, preset="tiny", config={}, started=0, finished=1,
                   final=[{"variant": "default", "episode": 0, "return": 1.0, "length": 1}])
    assert store.record(ok)
    assert not store.record(RunResult(run_id="r", algorithm="bc", dataset="d", seed=0, preset="tiny", config={},
                                      status="failed", error="boom"))
    assert store.status() == {"r": "finished"} and len(store.table("final_scores")) == 1


def test_two_sweep_drivers_on_one_results_directory(tiny_pointmaze, session_root, tmp_path):
    """Started together on the same runs: every run trains once, no row is lost, duplicated or failed."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"algorithms: [qgpo, bc]\ndatasets: [{TINY_ID}]\nseeds: [0, 1]\npreset: tiny\nepisodes: 2\n"
                     "overrides: {device: cpu, qgpo: {behaviour_steps: 60, q_steps: 40, energy_steps: 50}}\n")
    results = tmp_path / "runs"
    env = {**os.environ, "MINARI_DATASETS_PATH": str(session_root), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "bench.cli", "sweep", str(sweep), "--results", str(results), "--no-progress"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    store = ResultsStore(results)
    runs = store.table("runs")
    assert len(runs) == 4 and (runs.status == "finished").all()
    final = store.table("final_scores")
    assert len(final) == 4 * 2 and not final.duplicated(["run_id", "variant", "episode"]).any()
    assert not list(results.rglob("*.tmp"))
    # each run trained once: a driver that found a run taken waited for it and then found it finished
    both = "".join(outputs)
    assert both.count("behaviour: 60 steps") == 2 and both.count("policy: 50 steps") == 2, both


def test_a_copied_or_touched_dataset_file_is_the_same_dataset(tmp_path):
    a = write_h5(tmp_path / "a" / "hopper_medium-v2.hdf5", n=80)
    b = tmp_path / "b" / "hopper_medium-v2.hdf5"
    b.parent.mkdir()
    shutil.copy(a, b)
    time.sleep(0.01)
    os.utime(a)
    assert catalog.fingerprint(str(a)) == catalog.fingerprint(str(b)) != "unavailable"
    c = write_h5(tmp_path / "c" / "hopper_medium-v2.hdf5", n=81)
    assert catalog.fingerprint(str(c)) != catalog.fingerprint(str(a))


def test_verify_makes_only_trusted_envs_unless_told(capsys, tiny_pointmaze, tmp_path, monkeypatch):
    assert catalog.env_entry_point_is_trusted("gymnasium_robotics.envs.maze.point_maze:PointMazeEnv")
    assert not catalog.env_entry_point_is_trusted("someones_package.envs:Env")
    import dataclasses

    from envs import catalog as cat

    real = cat._load

    def foreign(name, tol):
        ds, episodes = real(name, tol)
        spec = dataclasses.replace(ds.eval_env_spec, entry_point="someones_package.envs:Env")
        return dataclasses.replace(ds, eval_env_spec=spec), episodes

    monkeypatch.setattr(cat, "_load", foreign)
    code, out, err = run(capsys, "datasets", "verify", TINY_ID)
    assert code == 0 and "warning: not checked: its entry point 'someones_package.envs:Env'" in err
    code, out, err = run(capsys, "datasets", "verify", TINY_ID, "--make-env")
    assert code == 1 and "cannot recover its environment" in out


def test_run_makes_no_untrusted_env_unless_told(capsys, tiny_pointmaze, tmp_path, monkeypatch):
    """`run` and `sweep` make the evaluation env before training: one whose entry point is code from outside the
    trusted packages is one error, exit 2, nothing trained; --trust-env makes it (here it then fails to build)."""
    import dataclasses

    from envs import catalog as cat
    from envs.dataset import TRUST_ENV_VARIABLE

    real = cat.load_dataset

    def foreign(name, **kwargs):
        ds = real(name, **kwargs)
        return dataclasses.replace(ds, eval_env_spec=dataclasses.replace(ds.eval_env_spec,
                                                                          entry_point="collections:OrderedDict"))

    monkeypatch.setattr(cat, "load_dataset", foreign)
    monkeypatch.delenv(TRUST_ENV_VARIABLE, raising=False)
    argv = ("run", "bc", TINY_ID, "--preset", "tiny", "--results", tmp_path, "--no-progress")
    code, out, err = run(capsys, *argv)
    assert code == 2 and "entry point 'collections:OrderedDict' is code from outside" in err and "--trust-env" in err
    assert len(err.strip().splitlines()) == 1 and not list(tmp_path.glob("bc/*/*/*.pt"))
    code, out, err = run(capsys, *argv, "--trust-env")
    assert code == 2 and "cannot recover its environment" in err
    monkeypatch.delenv(TRUST_ENV_VARIABLE, raising=False)


def test_perf_against_the_official_code_needs_a_real_checkout(capsys, tmp_path):
    """Reference figures come only from the official code timed in the same run; a wrong path is one error."""
    code, _, err = run(capsys, "perf", "qgpo", "--official", tmp_path, "--out", "")
    assert code == 2 and "is not a checkout of the official QGPO code" in err and len(err.strip().splitlines()) == 1


def test_the_critic_comparison_needs_a_real_checkout_and_a_support_stage(capsys, tmp_path):
    code, _, err = run(capsys, "perf", "critic", "--official", tmp_path, "--support", tmp_path / "x.pt", "--out", "")
    assert code == 2 and "is not a checkout of the official QGPO code" in err and len(err.strip().splitlines()) == 1
    fake = tmp_path / "cep" / "Offline_RL_2D" / "diffusion_SDE"
    fake.mkdir(parents=True)
    (fake / "model.py").write_text("")
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    code, _, err = run(capsys, "perf", "critic", "--official", tmp_path / "cep", "--support", tmp_path / "x.pt", "--out", "")
    assert code == 2 and "cannot read checkpoint" in err and len(err.strip().splitlines()) == 1


def test_perf_sweep_needs_a_results_store(capsys, tmp_path):
    code, _, err = run(capsys, "perf", "qgpo", "--sweep", tmp_path, "--out", "")
    assert code == 2 and f"no results store in {tmp_path}" in err and len(err.strip().splitlines()) == 1


def test_guidance_scales_for_an_unguided_algorithm_are_one_error():
    with pytest.raises(ConfigError, match="bc has no guidance scale to sweep"):
        RunSpec("bc", TINY_ID, preset="tiny", guidance_scales=(1.0,)).config()


def test_heavy_envs_run_in_waves_that_keep_each_episode_its_seed(tiny_pointmaze, monkeypatch):
    """A family with a limit on envs at once (OGBench's take ~160 MB each) evaluates in waves: every env keeps
    its seed, so a deterministic policy scores each episode as in one batch; scales past the limit go one by one."""
    from bench.harness.evaluation import evaluate_scales
    from envs import families

    class Toward:  # deterministic in the observation, whatever the scale
        def act(self, obs, guidance_scale=None):
            return np.clip(-np.asarray(obs)[:, :2], -1.0, 1.0).astype(np.float32)

        def seed(self, seed):
            pass

    ds = load_dataset(TINY_ID)
    whole = evaluate(Toward(), ds, episodes=5, seed=3, max_steps=40)
    assert "eval_envs_at_once" not in RunSpec("bc", TINY_ID).protocol()
    monkeypatch.setitem(families.MAX_VECTOR_ENVS, "pointmaze", 2)
    waves = evaluate(Toward(), ds, episodes=5, seed=3, max_steps=40)
    np.testing.assert_array_equal(waves.returns, whole.returns)
    np.testing.assert_array_equal(waves.lengths, whole.lengths)
    per_scale = evaluate_scales(Toward(), ds, [0.0, 1.0], episodes=5, seed=3, max_steps=40)
    assert [len(r.returns) for r in per_scale] == [5, 5]
    assert all(np.array_equal(r.returns, whole.returns) for r in per_scale)
    assert RunSpec("bc", TINY_ID).protocol()["eval_envs_at_once"] == 2  # part of the run's identity


def test_no_evaluation_builds_more_envs_at_once_than_the_default_limit(tiny_pointmaze, monkeypatch):
    """Families without a limit of their own get the default one (issue 36: 10,000 episodes built 10,000 envs
    after training); it enters a run's identity only where it cuts the evaluation into waves."""
    from bench.harness.evaluation import evaluate
    from envs import families

    ds = load_dataset(TINY_ID)
    built = []
    make = ds.make_vector_env
    monkeypatch.setattr(type(ds), "make_vector_env", lambda self, n: built.append(n) or make(n))
    monkeypatch.setattr(families, "DEFAULT_MAX_VECTOR_ENVS", 3)

    class Still:
        def act(self, obs):
            return np.zeros((len(obs), 2), np.float32)

        def seed(self, seed):
            pass

    from bench.harness import env_pool

    monkeypatch.setattr("bench.harness.evaluation.POOL", env_pool.EnvPool())
    result = evaluate(Still(), ds, episodes=7, seed=0, max_steps=3)
    assert built == [3, 1] and len(result.returns) == 7  # waves of 3, 3, 1: the second wave steps the first's envs
    assert "eval_envs_at_once" not in RunSpec("bc", TINY_ID, episodes=3, curve_episodes=3).protocol()  # no waves
    assert RunSpec("bc", TINY_ID, episodes=4, curve_episodes=3).protocol()["eval_envs_at_once"] == 3
    monkeypatch.setattr(families, "DEFAULT_MAX_VECTOR_ENVS", 100)
    assert "eval_envs_at_once" not in RunSpec("bc", TINY_ID).protocol()  # maze's 100 episodes: ids kept
