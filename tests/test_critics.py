"""Every critic's wiring on an MDP with a known answer: terminals end the return, time limits do not.

Two absorbing states, reward 1 at every step whatever the action, gamma 0.5: state A's steps all end by
termination, so Q(A, .) = 1; state B loops on itself and is only ever cut by a time limit, so Q(B, .) =
1 / (1 - gamma) = 2. A critic that bootstraps through terminals reads 2 at A; one that stops at time limits
reads 1 at B; one whose reward or discount is wired wrong misses both. Each algorithm trains its own critic, the
way it does on real data (its reward transform left out: the rewards are the MDP's)."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from envs.transitions import Transitions
from policies import registry

from .checks import offset_bandit

N = 256
# per algorithm: its critic's steps and target rate, and whatever else its other stages need to stay tiny. At these
# steps every critic below ends within 0.02 of both values (twice the steps: within 0.01; a third of them: Diffusion-QL
# and DAC 0.18 and 0.12 short at the terminal state), against tolerances of 0.1 and 0.15 and faults that move a value by 1
SETTINGS = {
    "td3bc": {"steps": 1500, "tau": 0.05},
    "iql": {"critic_steps": 1500, "actor_steps": 5, "target_tau": 0.05},
    "diffusion_ql": {"steps": 750, "tau": 0.05},
    "idql": {"critic_steps": 1500, "behaviour_steps": 5, "target_tau": 0.05},
    # an untrained behaviour model's support actions fall far outside the box; clamped, as the cpu preset does
    "qgpo": {"q_steps": 1500, "tau": 0.05, "behaviour_steps": 5, "energy_steps": 5, "support_clip": True},
    "srpo": {"critic_steps": 1500, "behaviour_steps": 5, "policy_steps": 5, "target_tau": 0.05},
    "fql": {"steps": 1000, "tau": 0.05, "flow_steps": 1},
    # the plain ensemble mean here (the LCB: tests/test_dac.py); one draw per next state
    "dac": {"steps": 600, "tau": 0.05, "rho": 0.0, "backup_samples": 1},
}


def absorbing(umaze) -> object:
    """The tiny maze's spaces with the two-state MDP's transitions: half the rows at A (terminal), half at B."""
    obs_dim, act_dim = umaze.transitions.obs_dim, umaze.transitions.action_dim
    obs = np.concatenate([np.zeros((N // 2, obs_dim)), np.ones((N // 2, obs_dim))])
    actions = np.random.default_rng(0).uniform(-1, 1, (N, act_dim))
    ends = np.zeros(N)
    t = Transitions.from_arrays(observations=obs, actions=actions, rewards=np.ones(N), next_observations=obs,
                                terminals=np.r_[np.ones(N // 2), np.zeros(N // 2)],
                                timeouts=np.r_[np.zeros(N // 2), np.ones(N // 2)] + ends,
                                episode_starts=np.arange(N + 1))
    return dataclasses.replace(umaze, transitions=t)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_each_critic_stops_at_terminals_and_bootstraps_through_time_limits(umaze, name):
    data = absorbing(umaze)
    config = registry.make_config(name, "tiny", {"device": "cpu", "gamma": 0.5, **SETTINGS[name]})
    algo = registry.get(name).for_dataset(data, config)
    torch.manual_seed(0)
    algo.fit(data)
    q = algo.q_function()
    states = torch.stack([torch.zeros(data.transitions.obs_dim), torch.ones(data.transitions.obs_dim)])
    with torch.no_grad():
        values = q(states.repeat_interleave(16, 0), torch.rand(32, data.transitions.action_dim) * 2 - 1).view(2, 16)
    assert values[0].mean().item() == pytest.approx(1.0, abs=0.1), f"{name}: Q at the terminal state"
    assert values[1].mean().item() == pytest.approx(2.0, abs=0.15), f"{name}: Q at the time-limited loop"


def test_fqe_backs_up_the_datas_next_action_and_leaves_out_what_a_time_limit_cut():
    """Episode A: 3 steps then a time limit; B: 2 steps then termination. Every transition continuing its
    trajectory backs up the next row's action, the terminal one none; A's last (its next action unknown) is out."""
    from policies.core.fqe import successor_actions

    obs = np.arange(6.0)[:, None]
    t = Transitions.from_arrays(observations=np.r_[obs[:3], obs[4:6]], actions=np.arange(5.0)[:, None],
                                rewards=np.ones(5), next_observations=np.r_[obs[1:4], obs[5:6], obs[5:6]],
                                terminals=np.array([0, 0, 0, 0, 1]), timeouts=np.array([0, 0, 1, 0, 0]),
                                episode_starts=np.array([0, 3, 5]))
    nxt, rows = successor_actions(t)
    assert nxt.tolist()[:2] == [1, 2] and nxt[3].item() == 4 and sorted(rows.tolist()) == [0, 1, 3, 4]


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_fitted_q_evaluation_with_each_algorithms_critic_learns_the_known_values(umaze, name):
    """The same MDP, the behaviour policy's value learned by SARSA with each algorithm's own critic as it builds and
    trains it (`Algorithm.critic_spec`): a wrong normalisation, discount or terminal mask there shows here."""
    from policies.core.fqe import fit_fqe

    data = absorbing(umaze)
    config = registry.make_config(name, "tiny", {"device": "cpu", "gamma": 0.5, **SETTINGS[name]})
    spec = registry.get(name).for_dataset(data, config).critic_spec()
    spec.tau = 0.05
    q, record = fit_fqe(spec, data.transitions, 1500, torch.Generator().manual_seed(0))
    states = torch.stack([torch.zeros(data.transitions.obs_dim), torch.ones(data.transitions.obs_dim)])
    with torch.no_grad():
        values = q(states.repeat_interleave(16, 0), torch.rand(32, data.transitions.action_dim) * 2 - 1).view(2, 16)
    assert values[0].mean().item() == pytest.approx(1.0, abs=0.1) and values[1].mean().item() == pytest.approx(2.0, abs=0.15)
    assert record["steps"] == 1500


def test_the_critics_study_follows_each_critic_against_the_datas_returns(tiny_pointmaze, tmp_path):
    from bench.cli import main

    code = main(["critics", "--algorithms", "td3bc,qgpo", "--datasets", "diffbench/pointmaze/umaze-small-v0",
                 "--seeds", "0,1", "--steps", "40", "--preset", "tiny", "--out", str(tmp_path / "critics.md")])
    text = (tmp_path / "critics.md").read_text()
    assert code == 0 and "## Fitted-Q evaluation: td3bc on diffbench/pointmaze/umaze-small-v0" in text
    assert "## Fitted-Q evaluation: qgpo on" in text
    assert "Returns over continuing streams" in text  # a maze's one stream, not its goal-to-goal segments
    assert text.count("\n| 40 | ") == 2 and text.count("\n| 4 | ") == 2  # each critic read along training and at its end
    assert "## Fitted-Q evaluation at the end of the budget" in text
    assert "| td3bc | diffbench/pointmaze/umaze-small-v0 |" in text


def test_the_critics_study_keeps_each_fit_and_resumes_without_making_it_again(tiny_pointmaze, tmp_path, monkeypatch):
    from bench.cli import main
    from bench.studies import critics

    rows, args = tmp_path / "fqe.csv", ["critics", "--algorithms", "td3bc", "--datasets",
                                        "diffbench/pointmaze/umaze-small-v0", "--seeds", "0", "--steps", "20",
                                        "--preset", "tiny", "--out", str(tmp_path / "c.md")]
    assert main([*args, "--rows", str(rows)]) == 0
    first = rows.read_text()
    assert first.count("\ntd3bc,") == 10 and ",0,20,tiny,20," in first  # ten checks, the last at the budget
    made = []
    monkeypatch.setattr(critics, "fqe_rows", lambda *a, **k: made.append(a) or [])
    notes = tmp_path / "notes.md"
    notes.write_text("- tried twice the steps\n")
    assert main([*args, "--seeds", "0,1", "--rows", str(rows), "--no-run", "--notes", str(notes)]) == 0
    assert made == [] and rows.read_text() == first  # --no-run reads, and makes nothing
    assert "tried twice the steps" in (tmp_path / "c.md").read_text()
    assert main([*args, "--seeds", "0,1", "--rows", str(rows)]) == 0
    assert [a[2] for a in made] == [1]  # seed 0 read back; only seed 1 made
    rows.write_text("not,the,study\n1,2,3\n")
    with pytest.raises(ValueError, match="not written by `diffbench critics`"):
        critics.read_rows(rows)


def test_the_critics_page_sets_each_critics_score_beside_bc(tmp_path):
    """BC at 30 ± 1; TD3+BC at 35 (above BC's interval), IQL at 10 (below it); QGPO s = 1 two points under s = 0 on
    every seed (the paired interval below zero); SfBC's returns network's check, read in its runs, beside them."""
    from bench.harness.store import ResultsStore, RunResult
    from bench.studies import critics

    store = ResultsStore(tmp_path / "store")
    hopper = "diffbench/hopper/medium-small-v0"
    for seed, bc in enumerate((29.0, 30.0, 31.0)):
        for algo, scores in (("bc", {None: bc}), ("td3bc", {None: bc + 5}), ("iql", {None: 10.0 + seed}),
                             ("qgpo", {0.0: bc, 1.0: bc - 2}), ("sfbc", {None: bc})):
            check = {"q_data_mean": 150.0 + seed, "value_bounds": [0.1, 565.6], "outside_bounds": False,
                     "mc_return_mean": 166.0, "mc_correlation": 0.8, "returns": "episodes", "policy_gap_mean": 1.0}
            final = [{"variant": "default" if s is None else f"guidance_scale={s:g}", "guidance_scale": s,
                      "episode": i, "return": v, "length": 10, "score": v} for s, v in scores.items() for i in range(2)]
            store.record(RunResult(run_id=f"{algo}-{seed}", algorithm=algo, dataset=hopper, seed=seed, preset="cpu",
                                   config=registry.make_config(algo, "cpu", {"seed": seed}).to_dict(), started=0.0,
                                   finished=60.0, gradient_steps=10, hardware={"torch_threads": 1}, final=final,
                                   diagnostics={"critic": check} if algo == "sfbc" else {}))
    table, inside = critics.store_rows(store, "cpu", tmp_path / "scratch")
    rows = {r["check"]: r for r in table.to_dict("records")}
    assert bool(rows["td3bc within MLP BC's 95% interval or above"]["holds"])
    assert not rows["iql within MLP BC's 95% interval or above"]["holds"]
    paired = rows["QGPO s = 1 at or above its s = 0 (paired over seeds, interval not below zero)"]
    assert not paired["holds"] and paired["figure"].startswith("s = 1 − s = 0: -2.0")
    tried = pd.DataFrame([{"variant": "reward_transform=none", "check": "td3bc score", "dataset": hopper,
                           "figure": "12.0", "holds": None}])
    page = critics.write(pd.DataFrame(), tmp_path / "c.md", "diffbench critics", "abc", "here", "cpu",
                         {"store": table}, variants={"store": tried}, checks={"store": inside}).read_text()
    assert "| diffbench/hopper/medium-small-v0 | sfbc[cpu] | 3 | 151.0 | [0.1, 565.6] | 166.0 | 0.80 | 0 | episodes | 1.0 |" in page
    assert "| reward_transform=none | td3bc score | diffbench/hopper/medium-small-v0 | 12.0 |  |" in page
    assert "| td3bc within MLP BC's 95% interval or above | diffbench/hopper/medium-small-v0 | 35.0 ± 1.0" in page


def test_every_critic_names_the_stages_that_train_it_or_records_its_own_course():
    """The harness follows a critic's check along the stages its algorithm names (`critic_stages`); the shared
    Q_0's algorithms record its course along their critic stage themselves. An algorithm with a critic and
    neither would report a critic without its course."""
    from policies.algorithms.pretrain import PretrainedAlgorithm

    for name in registry.available():
        cls = registry.get(name)
        assert set(cls.critic_stages) <= set(cls.stages), name
        if name in SETTINGS and not issubclass(cls, PretrainedAlgorithm):
            assert cls.critic_stages, f"{name} has a critic but names no stage that trains it"
        if issubclass(cls, PretrainedAlgorithm) and "critic" in cls.stages:
            assert not cls.critic_stages, f"{name}: the shared critic's course is recorded by its critic stage"


# per algorithm: settings that learn the one-step task below, and its states' offset (the raw-state critics of
# Diffusion-QL, IDQL and SfBC, as in their official code, are given states near the origin; TD3+BC normalises)
DIRECTION = {
    "td3bc": ({"steps": 800, "batch": 256, "hidden": 64}, 100.0),
    "diffusion_ql": ({"steps": 600, "batch": 256, "hidden": 64, "q_hidden": 64, "ema_start": 10}, 0.0),
    "idql": ({"behaviour_steps": 800, "critic_steps": 800, "behaviour_batch": 256}, 0.0),
    "sfbc": ({"behaviour_steps": 800, "round_steps": 300, "rounds": 1}, 0.0),
    "srpo": ({"behaviour_steps": 800, "behaviour_batch": 256, "critic_steps": 800, "policy_steps": 400,
              "beta": 1.0}, 0.0),
    "fql": ({"steps": 800, "batch": 256, "hidden": 64, "q_hidden": 64, "alpha": 1.0}, 0.0),
    "dac": ({"steps": 600, "batch": 256, "hidden": 64, "q_hidden": 64, "ema_start": 10}, 0.0),
}


@pytest.mark.parametrize("name", sorted(DIRECTION))
def test_each_policy_moves_toward_each_states_higher_q_action(name):
    """One step, two states: r = a in state 1 and -a in state 0 (behaviour uniform, so cloning it gives 0 in both).
    Each critic-driven policy acts below 0 in state 0 and above in state 1 (when written: -0.90/+0.94 TD3+BC,
    -0.80/+0.79 Diffusion-QL, -0.82/+0.37 IDQL, -0.35/+0.22 SfBC); a Q term or selection of the wrong sign, or a
    critic blind to the state, fails. IQL's own test also checks its acting normalisation (tests/test_iql.py)."""
    overrides, offset = DIRECTION[name]
    data = offset_bandit(n=2048, offset=offset)
    algo = registry.get(name).for_dataset(data, registry.make_config(name, "tiny", {"device": "cpu", **overrides}))
    algo.fit(data)
    means = algo.act(np.repeat(np.eye(2) + offset, 256, 0))[:, 0].reshape(2, 256).mean(1)
    assert means[0] < -0.1 and means[1] > 0.1, means
