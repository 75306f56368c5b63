"""Running: one run, executors, the results store, sweeps, evaluation, provenance."""
