"""`diffbench perf kernels`: the Mish algorithms' training steps timed eager and fused in one run; with compiling
off (as in the suite) both calls run eager and the table says so."""

from bench.studies.perf_kernels import measure, write_report


def test_one_row_per_algorithm_with_the_kernel_the_fused_calls_got(tmp_path):
    rows = measure(("dac",), preset="tiny", steps=2, repeats=1)
    assert [r["algorithm"] for r in rows] == ["dac"]
    assert rows[0]["eager_ms"] > 0 and rows[0]["fused_ms"] > 0 and rows[0]["kernel"] == "eager"
    write_report(rows, tmp_path / "kernels.md", "diffbench perf kernels")
    assert "| dac |" in (tmp_path / "kernels.md").read_text()
