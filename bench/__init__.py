"""Running: the `diffbench` CLI, reports, provenance, and (later) the harness and its executors."""
