"""OGBench play data made with the package's oracles: deterministic per seed; single-task views with OGBench's
rewards, the same from our Minari copy as from an official-format file; success-rate scoring; clear errors."""

import dataclasses

import numpy as np
import pytest

from envs import DatasetError, DatasetNotFoundError
from envs.ogbench import play, singletask

ID = "diffbench/ogbench/cube-single-play-small-v0"


@pytest.fixture(scope="module")
def episodes():
    return play.collect(play.RECIPES[ID], 2, seed=5, episode_steps=61)


def test_episodes_failing_the_health_check_are_collected_again_and_counted(monkeypatch):
    verdicts = iter([False, True, True])  # the first episode fails (as scene's cube leaving the view would)
    monkeypatch.setattr(play, "_healthy", lambda name, qpos: next(verdicts))
    stats = {}
    assert len(play.collect(play.RECIPES[ID], 2, seed=5, episode_steps=11, stats=stats)) == 2
    assert stats == {"rejected_episodes": 1}


def test_play_data_are_deterministic_per_seed_and_keep_the_simulator_state(episodes):
    again = play.collect(play.RECIPES[ID], 2, seed=5, episode_steps=61)
    other = play.collect(play.RECIPES[ID], 1, seed=6, episode_steps=61)
    assert all(np.array_equal(a.actions, b.actions) and np.array_equal(a.observations, b.observations)
               for a, b in zip(episodes, again))
    assert not np.array_equal(episodes[0].actions, other[0].actions)
    ep = episodes[0]
    assert ep.actions.shape == (60, 5) and ep.observations.shape == (61, 28) and ep.infos["qpos"].shape[0] == 61
    assert np.abs(ep.actions).max() <= 1 and ep.truncations[-1] and not ep.terminations.any()
    state = np.random.get_state()[1][:3]
    play.collect(play.RECIPES[ID], 1, seed=7, episode_steps=3)
    assert np.array_equal(np.random.get_state()[1][:3], state)  # the global generator is given back


def test_scene_episodes_that_push_the_cube_out_of_view_are_redone():
    qpos = np.zeros((3, 25))
    assert play._healthy("scene", qpos)
    qpos[1, 15] = 0.3  # too far right
    assert not play._healthy("scene", qpos) and play._healthy("cube-single", qpos)


def _official_npz(episodes, path):
    """Our episodes in OGBench's file layout: every observation a row, the last of an episode flagged."""
    rows = {k: [] for k in ("observations", "actions", "terminals", "qpos", "qvel")}
    for ep in episodes:
        n = len(ep.actions)
        rows["observations"].append(ep.observations)
        rows["actions"].append(np.concatenate([ep.actions, ep.actions[-1:]]))
        rows["terminals"].append(np.arange(n + 1) == n)
        rows["qpos"].append(ep.infos["qpos"])
        rows["qvel"].append(ep.infos["qvel"])
    np.savez_compressed(path, **{k: np.concatenate(v) for k, v in rows.items()})


def test_single_task_views_use_ogbench_rewards_alike_from_our_copy_and_an_official_file(
        episodes, session_root, tmp_path, monkeypatch):
    from envs.catalog import load_dataset
    from envs.minari_source import pinned_root
    from envs.minari_writer import write_dataset

    from envs.catalog import fingerprint

    kwargs = play.build(ID, episodes=2, seed=5, progress=False, episode_steps=61)
    task1, task2 = ID.replace("-v0", "-singletask-task1-v0"), ID.replace("-v0", "-singletask-v0")
    with pinned_root(session_root):
        write_dataset(ID, overwrite=True, **kwargs)
        ours = load_dataset(task1)
        default = load_dataset(task2)
        # a view's identity (run ids hash it) is its play data's with its task: two tasks of one base differ, and
        # neither is the "no content" of a view whose base is not on disk
        views = {fingerprint(task1), fingerprint(task2)}
        assert len(views) == 2 and "unavailable" not in views
        assert fingerprint("diffbench/ogbench/scene-play-singletask-v0") == "unavailable"
    monkeypatch.setenv("OGBENCH_DATASET_DIR", str(tmp_path))
    assert fingerprint("cube-single-play-singletask-task1-v0") == "unavailable"  # OGBench's file not there yet
    _official_npz(episodes, tmp_path / "cube-single-play-v0.npz")
    official = load_dataset("cube-single-play-singletask-task1-v0")
    assert fingerprint("cube-single-play-singletask-task1-v0") not in views | {"unavailable"}
    assert ours.score == "success" and ours.eval_env_spec.id == "cube-single-singletask-task1-v0"
    assert default.eval_env_spec.id == "cube-single-singletask-v0" and default.metadata["singletask"]["task"] == 2
    t, o = ours.transitions, official.transitions
    assert len(t) == len(o) == 120
    assert np.allclose(t.observations.numpy(), o.observations.numpy(), atol=1e-6)
    assert np.array_equal(t.rewards.numpy(), o.rewards.numpy()) and np.array_equal(t.terminals.numpy(), o.terminals.numpy())
    r = t.rewards.numpy()
    assert set(np.unique(r)) <= {-1.0, 0.0} and np.array_equal(t.terminals.numpy() == 1, r == 0)
    with pytest.raises(DatasetNotFoundError, match="never downloads"):
        load_dataset("scene-play-singletask-v0")
    from envs.catalog import list_datasets

    with pinned_root(session_root):
        views = {r["id"] for r in list_datasets() if r["source"] == "view"}
    assert {ID.replace("-v0", "-singletask-task5-v0"), "cube-single-play-singletask-task1-v0"} <= views


def test_success_is_the_score_of_a_single_task_view(episodes, session_root):
    from bench.harness.evaluation import evaluate
    from envs.catalog import load_dataset
    from envs.minari_source import pinned_root
    from envs.minari_writer import write_dataset

    class Still:
        def seed(self, seed):
            pass

        def act(self, obs):
            return np.zeros((len(obs), 5), dtype=np.float32)

    from envs.catalog import fingerprint

    with pinned_root(session_root):
        before = fingerprint(ID.replace("-v0", "-singletask-task2-v0"))
        write_dataset(ID, overwrite=True, **play.build(ID, episodes=1, seed=5, progress=False, episode_steps=11))
        ds = load_dataset(ID.replace("-v0", "-singletask-task2-v0"))
        assert fingerprint(ID.replace("-v0", "-singletask-task2-v0")) != before  # other play data, another view
    res = evaluate(Still(), ds, episodes=2, seed=0)
    assert res.lengths.tolist() == [200, 200] and res.normalized.tolist() == [0.0, 0.0]  # standing still never succeeds
    # the vector env that evaluation kept scores as a new one (tests/test_env_pool.py: the maze and MuJoCo's hopper)
    from bench.harness import env_pool

    from .test_env_pool import Noisy

    policy, seen = Noisy(ds.action_space.low, ds.action_space.high), []
    for s in (3, 4, 3):
        evaluate(policy, ds, episodes=2, seed=s, max_steps=25)
        seen.append(policy.observed())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("bench.harness.evaluation.POOL", env_pool.EnvPool())
        evaluate(policy, ds, episodes=2, seed=3, max_steps=25)
    assert np.array_equal(seen[0], seen[2]) and np.array_equal(seen[0], policy.observed())
    assert not np.array_equal(seen[0], seen[1])  # other seeds, other states: the record tells them apart


def test_the_plan_oracle_that_made_the_data_succeeds_through_our_evaluation(session_root):
    """The positive control for every 0% on cube-single: OGBench's own plan oracle (noise as in the data), given the
    task's goal and acting in the single-task view's evaluation envs, succeeds there, and our evaluation scores it
    100 per episode. So a learned policy's 0% is its own, not the env, the task's goal or the success bookkeeping."""
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle

    from bench.harness.evaluation import evaluate
    from envs.catalog import load_dataset
    from envs.minari_source import pinned_root
    from envs.minari_writer import write_dataset

    with pinned_root(session_root):
        write_dataset(ID, overwrite=True, **play.build(ID, episodes=1, seed=5, progress=False, episode_steps=11))
        ds = load_dataset(ID.replace("-v0", "-singletask-v0"))
    made = []
    make = ds.make_vector_env
    object.__setattr__(ds, "make_vector_env", lambda n, *a, **k: made.append(make(n, *a, **k)) or made[-1])

    def told_the_goal(env):  # what the data-collection mode tells the oracle, from the task's goal instead
        info = env.compute_ob_info()
        info |= {"privileged/target_block": 0, "privileged/target_block_yaw": np.zeros(1),
                 "privileged/target_block_pos": env._data.mocap_pos[env._cube_target_mocap_ids[0]].copy()}
        return info

    class Oracle:
        def seed(self, seed):
            np.random.seed(seed)  # the oracle's noise draws from NumPy's global generator
            self.agents = None

        def act(self, obs):
            envs = [e.unwrapped for e in made[-1].envs]
            if self.agents is None:
                self.agents = [CubePlanOracle(env=made[-1].envs[0], noise=play.NOISE,
                                              noise_smoothing=play.NOISE_SMOOTHING) for _ in envs]
                for agent, env in zip(self.agents, envs):
                    agent.reset(None, told_the_goal(env))
            return np.stack([np.clip(agent.select_action(None, told_the_goal(env)), -1, 1)
                             for agent, env in zip(self.agents, envs)]).astype(np.float32)

    res = evaluate(Oracle(), ds, episodes=3, seed=0)
    assert res.normalized.tolist() == [100.0] * 3 and (res.lengths < 200).all(), res.lengths
    assert (res.returns == -(res.lengths - 1)).all()  # -1 a step until the step that succeeds


def test_unknown_recipes_and_states_are_one_clear_error():
    with pytest.raises(DatasetError, match="no recipe generates"):
        play.build("diffbench/ogbench/cube-double-play-v0", episodes=1, seed=0, progress=False)
    assert singletask.parse("diffbench/ogbench/scene-play-singletask-task6-v0") is None
    assert singletask.parse("puzzle-3x3-play-singletask-task3-v0") == ("puzzle-3x3-play-v0", "puzzle-3x3", 3)


def test_a_run_on_a_single_task_view_records_success_rates(session_root, tmp_path):
    from bench.harness.executors import run_all
    from bench.harness.runner import RunSpec
    from bench.harness.store import ResultsStore
    from envs.minari_source import pinned_root
    from envs.minari_writer import write_dataset

    base = "diffbench/ogbench/puzzle-3x3-play-small-v0"
    with pinned_root(session_root):
        write_dataset(base, overwrite=True, **play.build(base, episodes=2, seed=1, progress=False, episode_steps=51))
    spec = RunSpec(algorithm="bc", dataset=base.replace("-v0", "-singletask-task1-v0"), seed=0, preset="tiny",
                   overrides={"device": "cpu"})
    assert spec.final_episodes() == 100
    spec = dataclasses.replace(spec, episodes=2)
    out = run_all([spec], tmp_path)
    assert len(out["finished"]) == 1, [r.error for r in out["failed"]]
    scores = ResultsStore(tmp_path).table("final_scores").score
    assert len(scores) == 2 and set(scores) <= {0.0, 100.0}


def test_a_headless_machine_gets_no_display_warning_from_the_renderer_probe():
    """dm_control probes GLFW when MUJOCO_GL is unset; with no display that probe warned in every run's log."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL")}
    code = ("import warnings\n"
            "from envs.ogbench import require\n"
            "with warnings.catch_warnings(record=True) as seen:\n"
            "    warnings.simplefilter('always'); require()\n"
            "    import gymnasium as gym; gym.make('cube-single-singletask-v0').close()\n"
            "print([str(w.message) for w in seen if 'DISPLAY' in str(w.message)])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
