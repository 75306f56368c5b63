"""2D bandits in the style of the CEP paper: ground truth for every guidance and fine-tuning method.

Each task has a behaviour distribution mu over actions x in R^2 and a Q(x) in [0, 1]. The target
of energy guidance is p(x) ∝ mu(x) exp(beta Q(x)); `sample_target` draws from it exactly.
"""

import importlib

# each name from its module, loaded on first use (the distances import torch; the task list needs numpy only)
_FROM = {"mmd_rbf": "distance", "sliced_wasserstein": "distance", "CONTROLS": "labels", "ToyControl": "labels",
         "get_control": "labels", "likelihood": "labels", "noise_floor": "target", "reject": "target",
         "sample_target": "target", "tilt": "target", "TASKS": "tasks", "ToyTask": "tasks", "get_task": "tasks",
         "mean_q": "tasks", "mode_masses": "tasks"}


def __getattr__(name: str):
    if name in _FROM:
        return getattr(importlib.import_module(f"envs.toy.{_FROM[name]}"), name)
    raise AttributeError(f"module 'envs.toy' has no attribute {name!r}")

__all__ = ["CONTROLS", "TASKS", "ToyControl", "ToyTask", "get_control", "get_task", "likelihood", "mean_q", "mmd_rbf", "mode_masses", "noise_floor",
           "reject", "sample_target", "sliced_wasserstein", "tilt"]
