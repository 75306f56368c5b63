"""What a finished run records besides its scores: the checks its stages made, the critic check for every
algorithm with a critic, how far its policy's actions sit above the data's in that critic's eyes, and the data's
own score (the report's reference row).

The critic check (`policies.core.critics.critic_check`) reads any Q(s, a) the same way, so IQL's, TD3+BC's,
Diffusion-QL's and IDQL's critics, and SfBC's returns network, are read as QGPO's Q_0 is. The gap
Q(s, pi(s)) - Q(s, a_data) is the critic's own estimate of the policy's improvement over the data: large where
the policy exploits the critic's errors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from envs.dataset import OfflineDataset
from envs.families import CONTINUING_FAMILIES, family
from policies.base import Algorithm
from policies.core.critics import CriticProbe, q_values

GAP_STATES = 1024  # probe states the policy acts on for the gap (a diffusion policy's acting is the costly part)


class CriticTrend:
    """The critic check at each of a run's curve points, for any algorithm with a critic: whether its Q settles,
    keeps climbing, or leaves the range the rewards allow, and when. (QGPO's shared critic records its own course
    along its critic stage; this one serves every other critic.)"""

    def __init__(self, algo: Algorithm, ds: OfflineDataset):
        self.algo, self.ds, self.points = algo, ds, []
        self.gamma = algo.critic_discount()
        self._probe: CriticProbe | None = None

    def probe(self) -> CriticProbe:
        """Drawn at the first reading, on the data where the algorithm keeps it."""
        if self._probe is None:
            t = self.ds.transitions.to(getattr(self.algo, "device", torch.device("cpu")))
            self._probe = CriticProbe(t, self.gamma, seed=getattr(self.algo.config, "seed", 0),
                                      continuing=family(self.ds.id) in CONTINUING_FAMILIES)
        return self._probe

    def __call__(self, stage: str, step: int) -> dict[str, Any] | None:
        q = self.algo.q_function() if stage in self.algo.critic_stages else None
        if q is None:
            return None
        self.points.append(self.probe().point(q, stage=stage, step=step))
        return self.points[-1]


def run_diagnostics(record: dict, algo: Algorithm, ds: OfflineDataset,
                    trend: CriticTrend | None = None) -> dict[str, Any]:
    out = {stage: r["check"] for stage, r in record["stages"].items() if "check" in r}
    weights = {stage: {"digest": r["weights"], "shared_as": r.get("shared_as")}
               for stage, r in record["stages"].items() if "weights" in r}
    if weights:  # what each stage's numbers were, so that every use of a shared stage can be checked against the others
        out["weights"] = weights
    q = algo.q_function()
    if q is not None:
        trend = trend or CriticTrend(algo, ds)
        probe = trend.probe()
        check = out.get("critic") or probe.check(q)
        if not check.get("trend"):
            check = check | {"trend": trend.points}
        out["critic"] = check | policy_gap(q, algo, probe.transitions, probe.rows[:GAP_STATES])
    data = ds.data_score()
    if data is not None:
        out["dataset"] = {"data_score": data[0], "how": data[1]}
    return out


@torch.no_grad()
def policy_gap(q: Any, algo: Algorithm, t: Any, rows: torch.Tensor) -> dict[str, float]:
    """Q(s, pi(s)) - Q(s, a_data) over the probe's states (mean and share above zero), pi acting as evaluated."""
    states = t.observations[rows.to(t.observations.device)]
    policy = torch.as_tensor(np.asarray(algo.act(states.cpu().numpy())), device=states.device)
    gap = (q_values(q, states, policy) - q_values(q, states, t.actions[rows.to(states.device)])).double()
    return {"policy_gap_mean": float(gap.mean()), "policy_gap_positive": float((gap > 0).double().mean())}
