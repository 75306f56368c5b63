"""`diffbench perf kernels`: the Mish algorithms' training steps timed eager and fused in one run; with compiling
off (as in the suite) both calls run eager and the table says so."""

from bench.cli import main
from bench.studies.perf_kernels import measure, write_report


def test_one_row_per_algorithm_with_the_kernel_the_fused_calls_got(tmp_path, capsys):
    rows = measure(("dac", "idql"), preset="tiny", steps=2, repeats=1)
    assert [r["algorithm"] for r in rows] == ["dac", "idql"]
    assert all(r["eager_ms"] > 0 and r["fused_ms"] > 0 and r["kernel"] == "eager" for r in rows)
    write_report(rows, tmp_path / "kernels.md", "diffbench perf kernels")
    assert "| dac |" in (tmp_path / "kernels.md").read_text()
    assert main(["perf", "kernels", "--algorithms", "dac,bc", "--out", ""]) == 2  # bc has no Mish network
    assert "'bc' has no Mish network" in capsys.readouterr().err
