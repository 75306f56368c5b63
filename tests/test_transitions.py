import numpy as np
import pytest
import torch

from envs.errors import DatasetError
from envs.transitions import Episode, Transitions, episodes_from_flat, transform_rewards


def episode(t: int, obs0: float, terminated: bool, reward: float = 1.0) -> Episode:
    obs = (obs0 + np.arange(t + 1, dtype=np.float64))[:, None].repeat(3, 1)
    return Episode(
        observations=obs,
        actions=np.zeros((t, 2), np.float32),
        rewards=np.full(t, reward),
        terminations=np.r_[np.zeros(t - 1, bool), terminated],
        truncations=np.r_[np.zeros(t - 1, bool), not terminated],
    )


def test_from_episodes_keeps_episode_structure():
    tr = Transitions.from_episodes([episode(3, 0.0, terminated=True), episode(4, 100.0, terminated=False, reward=2.0)])
    assert len(tr) == 7 and tr.num_episodes == 2
    assert tr.episode_starts.tolist() == [0, 3, 7]
    assert tr.observations.dtype == torch.float32 and tr.observations.shape == (7, 3)
    # successors stay inside their episode: the first episode ends at its own final state 3, not at 100
    assert tr.next_observations[:, 0].tolist() == [1, 2, 3, 101, 102, 103, 104]
    assert tr.terminals.tolist() == [0, 0, 1, 0, 0, 0, 0]
    # a truncation is a timeout, never a terminal
    assert tr.timeouts.tolist() == [0, 0, 0, 0, 0, 0, 1]
    assert tr.episode_returns().tolist() == [3.0, 8.0]


def test_shape_mismatch_is_one_clear_error():
    bad = episode(3, 0.0, True)
    bad = Episode(bad.observations[:3], bad.actions, bad.rewards, bad.terminations, bad.truncations)
    with pytest.raises(DatasetError, match="observations has 3 entries but 4 are needed"):
        Transitions.from_episodes([bad], source="mydata")


def test_nan_is_rejected_with_its_row():
    ep = episode(3, 0.0, True)
    ep.observations[2, 1] = np.nan
    with pytest.raises(DatasetError, match="mydata, episode 0: observations holds 1 NaN/inf value.*row 2"):
        Transitions.from_episodes([ep], source="mydata")


def test_termination_before_the_end_is_corrupt():
    ep = episode(4, 0.0, True)
    ep.terminations[1] = True
    with pytest.raises(DatasetError, match="terminations is set at step 1 of 4"):
        Transitions.from_episodes([ep])


@pytest.mark.parametrize("value", [2.0, 0.5, -1.0])
def test_a_flag_that_is_not_0_or_1_is_corrupt(value):
    ep = episode(4, 0.0, True)
    flags = ep.terminations.astype(np.float64)
    flags[-1] = value  # at the episode's end, so only the value is wrong
    ep = Episode(ep.observations, ep.actions, ep.rewards, flags, ep.truncations)
    with pytest.raises(DatasetError, match=f"mydata, episode 0: terminations holds {value!r}, not a flag"):
        Transitions.from_episodes([ep], source="mydata")
    ep = Episode(ep.observations, ep.actions, ep.rewards, np.r_[0.0, 0.0, 0.0, 1.0], ep.truncations)
    assert Transitions.from_episodes([ep]).terminals.tolist() == [0, 0, 0, 1]  # 0/1 floats are flags


def test_reward_transforms():
    tr = Transitions.from_episodes([episode(2, 0.0, True, reward=1.0), episode(3, 0.0, True, reward=3.0)])
    # returns 2 and 9: locomotion scaling multiplies by 1000 / 7
    loco = transform_rewards(tr, "locomotion")
    assert torch.allclose(loco.rewards, tr.rewards * 1000 / 7)
    assert torch.equal(transform_rewards(tr, "antmaze").rewards, tr.rewards - 1)
    with pytest.raises(DatasetError, match="unknown reward transform 'bogus'"):
        transform_rewards(tr, "bogus")


def flat(n):
    obs = np.arange(n, dtype=np.float64)[:, None]
    return obs, np.zeros((n, 1), np.float32), np.ones(n)


def test_flat_split_without_next_observations_drops_unknown_successors():
    obs, act, rew = flat(8)
    terminals = np.array([0, 0, 1, 0, 0, 0, 0, 0], bool)
    timeouts = np.array([0, 0, 0, 0, 0, 1, 0, 0], bool)
    eps, dropped = episodes_from_flat(obs, act, rew, terminals, timeouts, None)
    # episode [0..2] terminal: kept whole; [3..5] timeout: step 5 dropped; tail [6, 7]: step 7 dropped
    assert dropped == 2
    assert [len(e) for e in eps] == [3, 2, 1]
    assert eps[0].terminations.tolist() == [False, False, True]
    assert eps[1].observations[:, 0].tolist() == [3, 4, 5] and eps[1].truncations.tolist() == [False, True]
    assert eps[2].observations[:, 0].tolist() == [6, 7] and eps[2].truncations.tolist() == [True]
    tr = Transitions.from_episodes(eps)
    assert tr.next_observations[:, 0].tolist() == [1, 2, 2, 4, 5, 7]


def test_flat_split_with_next_observations_keeps_everything():
    obs, act, rew = flat(5)
    nxt = obs + 0.5
    eps, dropped = episodes_from_flat(obs, act, rew, np.array([0, 1, 0, 0, 0], bool), np.array([0, 0, 0, 1, 0], bool), nxt)
    assert dropped == 0 and [len(e) for e in eps] == [2, 2, 1]
    assert Transitions.from_episodes(eps).next_observations[:, 0].tolist() == [0.5, 1.5, 2.5, 3.5, 4.5]
