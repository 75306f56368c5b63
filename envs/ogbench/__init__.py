"""OGBench manipulation datasets (cube-single, scene, puzzle-3x3): "play" data made here with the package's
own scripted oracles (`play`), and their single-task views with OGBench's reward definition (`singletask`)."""


def require() -> None:
    """Import `ogbench` (registering its envs), or say how to install it."""
    try:
        import ogbench.manipspace  # noqa: F401
    except ModuleNotFoundError as exc:
        from envs.errors import DatasetError

        raise DatasetError("OGBench datasets need the ogbench package (its envs and oracles): "
                           "pip install 'diffbench[ogbench]'") from exc
