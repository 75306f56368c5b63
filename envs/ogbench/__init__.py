"""OGBench manipulation datasets (cube-single, scene, puzzle-3x3): "play" data made here with the package's
own scripted oracles (`play`), and their single-task views with OGBench's reward definition (`singletask`)."""

import warnings


def require() -> None:
    """Import `ogbench` (registering its envs), or say how to install it."""
    try:
        with warnings.catch_warnings():
            # With MUJOCO_GL unset, dm_control (which OGBench's envs import) tries GLFW first; with no display
            # that try warns once per process ("X11: The DISPLAY environment variable is missing") before it falls
            # back. Nothing here renders, so on a headless machine the warning is only noise in every run's log:
            # dm_control is imported here, once, with that warning off.
            warnings.filterwarnings("ignore", message=".*DISPLAY environment variable is missing")
            import dm_control.mjcf  # noqa: F401
            import ogbench.manipspace  # noqa: F401
    except ModuleNotFoundError as exc:
        from envs.errors import DatasetError

        raise DatasetError("OGBench datasets need the ogbench package (its envs and oracles): "
                           "pip install 'diffbench[ogbench]'") from exc
