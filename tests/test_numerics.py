"""Dataset generation under pinned numeric kernels (envs/numerics.py): the bytes must not depend on whether the
CPU has AVX-512, as they did before (the dense UMaze from an Intel Xeon differed from the AMD EPYC one)."""

import json
import platform

import pytest

from envs import catalog, numerics
from envs.errors import DatasetError
from .generated import fingerprint_made_under

TINY = "diffbench/pointmaze/umaze-dense-small-v0"
ARGS = dict(steps=400, seed=0, ref_episodes=2, progress=False)

pytestmark = pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                                reason="the pin names x86-64 levels")


def _avx2_machine_bytes(root) -> str:
    """The tiny UMaze as a CPU without AVX-512 makes it natively: numpy's dispatch stopped at X86_V3 from the
    start of its process (every target past it that this CPU has turned off), OpenBLAS on the same kernels."""
    from numpy._core import _multiarray_umath as core

    dispatch, features = list(core.__cpu_dispatch__), core.__cpu_features__
    past = [t for t in dispatch[dispatch.index("X86_V3") + 1:] if features.get(t)]
    return fingerprint_made_under({"NPY_DISABLE_CPU_FEATURES": " ".join(past), "OPENBLAS_CORETYPE": "ZEN"}, root,
                                  TINY, **ARGS)


def test_pinned_generation_makes_the_bytes_a_cpu_without_avx512_makes(tmp_path, monkeypatch):
    from numpy._core import _multiarray_umath as core

    if not core.__cpu_features__.get("X86_V3"):
        pytest.skip("this CPU is short of X86_V3, the pin's level")
    monkeypatch.delenv(numerics.OPT_OUT, raising=False)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "pinned"))
    path = catalog.generate(TINY, **ARGS)  # this process has every feature: the pin starts a child
    mine = catalog.verify(TINY, make_env="never")["fingerprint"]
    assert mine == _avx2_machine_bytes(tmp_path / "avx2")
    card = json.loads((path / "diffbench_card.json").read_text())
    assert card["numerics"] == {"numpy_dispatch": "X86_V3", "openblas_coretype": "ZEN", "pinned": True,
                                "machine": "x86_64"}
    assert card["generated_on"] == numerics.cpu_model()


def test_an_error_in_the_pinned_process_is_one_dataset_error(tmp_path, monkeypatch):
    monkeypatch.delenv(numerics.OPT_OUT, raising=False)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(DatasetError, match="--ref-episodes is for PointMaze"):
        catalog.generate("diffbench/hopper/medium-small-v0", steps=400, ref_episodes=2, progress=False)
