"""2D bandits in the style of the CEP paper: ground truth for every guidance and fine-tuning method.

Each task has a behaviour distribution mu over actions x in R^2 and a Q(x) in [0, 1]. The target
of energy guidance is p(x) ∝ mu(x) exp(beta Q(x)); `sample_target` draws from it exactly.
"""

from envs.toy.distance import mmd_rbf, sliced_wasserstein
from envs.toy.labels import CONTROLS, ToyControl, get_control, likelihood
from envs.toy.target import noise_floor, reject, sample_target, tilt
from envs.toy.tasks import TASKS, ToyTask, get_task, mode_masses

__all__ = ["CONTROLS", "TASKS", "ToyControl", "ToyTask", "get_control", "get_task", "likelihood", "mmd_rbf", "mode_masses", "noise_floor",
           "reject", "sample_target", "sliced_wasserstein", "tilt"]
