"""A dataset generated in a fresh process under other environment settings: what a machine whose kernels
differ (another CPU, other dispatch limits) would make from the same recipe."""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def fingerprint_made_under(settings: dict[str, str], root: Path, dataset: str, **generate: Any) -> str:
    """`catalog.generate(dataset, **generate)` in a child process with `settings` added to its environment,
    writing under `root`; the content identity it made. The child generates in its own process, unpinned
    unless `settings` pin it."""
    env = dict(os.environ, **settings, MINARI_DATASETS_PATH=str(root), DIFFBENCH_NUMERICS="native")
    args = ", ".join(f"{k}={v!r}" for k, v in generate.items())
    code = (f"from envs import catalog; catalog.generate({dataset!r}, {args}); "
            f"print(catalog.verify({dataset!r}, make_env='never')['fingerprint'])")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.split()[-1]
