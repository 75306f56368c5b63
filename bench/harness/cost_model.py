"""A run's cost projected from the store's finished runs, for `--time-limit`, `sweep --plan` and the sweep-cost page.

An algorithm's mean cost on the run's own group (dataset family, or the report's domain) where it has runs there.
Where it has none, its mean on another group says little by itself: a DDPO run on locomotion costs several times
its UMaze runs (longer episodes, wider networks' inputs, a behaviour model trained for it). So its mean on each
group it has is scaled by how much dearer the run's group is than that one for the algorithms with runs on both
(the geometric mean of their ratios), and those estimates are averaged. With no algorithm linking the groups, the
plain mean over the groups it has is all there is, and is said so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Estimate:
    seconds: float
    basis: str  # "same": its own runs on the group; "scaled": other groups', scaled; "other": other groups' as they are
    linked_by: tuple[str, ...] = ()  # the algorithms whose ratios between groups did the scaling

    def describe(self, runs: int) -> str:
        if self.basis == "same":
            return f"{runs} finished run(s)"
        if self.basis == "scaled":
            return (f"{runs} finished run(s), other domains, scaled by the domains' cost ratio for "
                    f"{', '.join(self.linked_by)}")
        return f"{runs} finished run(s), other domains (no algorithm with runs on both to scale by)"


def estimate(means: Mapping[tuple[str, str], float], algorithm: str, group: str) -> Estimate | None:
    """`means`: (algorithm, group) -> mean cost of its finished runs there. None where `algorithm` has no run."""
    if (algorithm, group) in means:
        return Estimate(means[(algorithm, group)], "same")
    mine = {g: m for (a, g), m in means.items() if a == algorithm}
    if not mine:
        return None
    scaled, linked = [], set()
    for other_group, cost in mine.items():
        peers = [a for (a, g) in means if g == group and a != algorithm and means.get((a, other_group), 0) > 0
                 and means[(a, group)] > 0]
        if peers:
            log_ratio = sum(math.log(means[(a, group)] / means[(a, other_group)]) for a in peers) / len(peers)
            scaled.append(cost * math.exp(log_ratio))
            linked.update(peers)
    if scaled:
        return Estimate(sum(scaled) / len(scaled), "scaled", tuple(sorted(linked)))
    return Estimate(sum(mine.values()) / len(mine), "other")
