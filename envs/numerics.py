"""Pinned numeric kernels for dataset generation: the same recipe gives the same bytes on other x86-64 CPUs.

numpy picks its SIMD loops per CPU when it is imported (AVX-512 ones where the CPU has them) and its
OpenBLAS picks matrix kernels per CPU model; both move the last bits of float results, and a rollout
through MuJoCo turns one last-bit difference into another trajectory. Measured: the dense UMaze and
OGBench cube-single generated on an Intel Xeon with AVX-512 held other bytes than the same recipes on the
AMD EPYC machines (AVX2) that made the committed results; with numpy's dispatch stopped at X86_V3 (AVX2,
FMA) and OpenBLAS on its Zen kernels they hold the same bytes (fingerprints 45a5ee0d2273, e0e59a3d0f2a).
Both settings are read when numpy is imported, so a process that did not start with them generates in a
child process that does (`run_pinned`).

Not pinned here: torch's CPU matrix products (MKL, which picks its kernels by CPU vendor). The locomotion
recipes roll their SAC actor out in numpy float64 for that reason, except the -medium-small ones, kept on
torch for their committed runs, whose bytes still differ between Intel and AMD CPUs (README, "The same bytes
on another machine").
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from envs.errors import DatasetError

CEILING = "X86_V3"  # numpy's dispatch level every x86-64 server CPU of the last decade has (AVX2, FMA)
OPENBLAS_CORE = "ZEN"  # what OpenBLAS chose on the machines that made the committed results
OPT_OUT = "DIFFBENCH_NUMERICS"  # "native": generate in this process with the CPU's own kernels (the tests do)


def _numpy_cpu() -> tuple[list[str], dict[str, bool]]:
    from numpy._core import _multiarray_umath as core

    return list(core.__cpu_dispatch__), dict(core.__cpu_features__)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def applies() -> bool:
    """On x86-64 and not opted out; elsewhere numpy's levels have other names and the pin says nothing."""
    return platform.machine().lower() in ("x86_64", "amd64") and os.environ.get(OPT_OUT, "") != "native"


def above_ceiling() -> list[str]:
    """numpy's dispatch targets past CEILING that this process runs with (one the CPU lacks is never named)."""
    dispatch, features = _numpy_cpu()
    past = dispatch[dispatch.index(CEILING) + 1:] if CEILING in dispatch else []
    return [t for t in past if features.get(t)]


def pinned_env() -> dict[str, str]:
    env = dict(os.environ)
    env["NPY_DISABLE_CPU_FEATURES"] = " ".join(above_ceiling())
    env["OPENBLAS_CORETYPE"] = OPENBLAS_CORE
    return env


def state() -> dict[str, Any]:
    """What this process's numpy and OpenBLAS run with, for a dataset card."""
    dispatch, features = _numpy_cpu()
    active = [t for t in dispatch if features.get(t)]
    return {"numpy_dispatch": active[-1] if active else "baseline",
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "native"),
            "pinned": is_pinned(), "machine": platform.machine()}


def is_pinned() -> bool:
    return (os.environ.get("OPENBLAS_CORETYPE", "").upper() == OPENBLAS_CORE and not above_ceiling()
            and bool(_numpy_cpu()[1].get(CEILING)))


def run_pinned(target: str, kwargs: dict[str, Any]) -> Any:
    """`module:function`(**kwargs) in a child process started under the pin; its JSON-able result. A
    DatasetError there is one here, with its message; anything else names the child's exit status (its
    traceback is on stderr above)."""
    with tempfile.TemporaryDirectory(prefix="diffbench-pinned-") as tmp:
        out = Path(tmp) / "result.json"
        job = json.dumps({"target": target, "kwargs": kwargs, "out": str(out)})
        done = subprocess.run([sys.executable, "-m", "envs.numerics", job], env=pinned_env())
        reply = json.loads(out.read_text()) if out.is_file() else None
    if reply is None:
        raise DatasetError(f"{target} failed in its pinned-numerics process (exit status {done.returncode}; its "
                           f"output is above); set {OPT_OUT}=native to run it in this process and see it there")
    if "error" in reply:
        raise DatasetError(reply["error"])
    return reply["result"]


def _child(job: dict[str, Any]) -> int:
    if not is_pinned():  # a CPU short of X86_V3: the target runs here all the same (it never starts a child)
        print(f"diffbench: warning: numpy runs at {state()['numpy_dispatch']}, short of the {CEILING} pin; the "
              "bytes may differ from other machines' (the card records it)", file=sys.stderr)
    module, name = job["target"].split(":")
    out = Path(job["out"])
    try:
        result = getattr(importlib.import_module(module), name)(**job["kwargs"])
    except DatasetError as exc:
        out.write_text(json.dumps({"error": str(exc)}))
        return 2
    out.write_text(json.dumps({"result": result}))
    return 0


if __name__ == "__main__":
    sys.exit(_child(json.loads(sys.argv[1])))
