"""MuJoCo's own warnings, through Python's warnings module.

MuJoCo prints a model's compile warnings to stderr each time it is built: gymnasium's HalfCheetah asset trips a
deprecation in every copy of a vector env, dozens of lines a curve point in a run's log. Routed through Python's
warnings instead, each is shown once (and can be filtered, or made an error, like any other).
"""

from __future__ import annotations

import warnings
from typing import Any


class MujocoWarning(RuntimeWarning):
    """A warning MuJoCo's C library raised (a model's compile warnings, say)."""


def _forward_mujoco_warning(message: Any) -> None:
    warnings.warn(str(message).strip(), MujocoWarning, stacklevel=2)


def quiet_mujoco_warnings() -> None:
    """Install the forwarding handler before envs are built; a handler somebody else installed is kept."""
    try:
        import mujoco
    except ImportError:
        return
    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_forward_mujoco_warning)
