#!/usr/bin/env bash
# Regenerates every committed report made from the leaderboard's results store, from a clean tree:
#   bash bench/sweeps/regenerate_results.sh [STORE]     (default: results/leaderboard)
# Run it after committing a snapshot of the store, so the files name a clean commit; then look at the
# figures (results/leaderboard/*.png) before committing them.
set -euo pipefail
store=${1:-results/leaderboard}
db=${DIFFBENCH:-diffbench}
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "regenerate_results.sh: the tree has uncommitted changes; commit them first so the reports name a clean commit" >&2
    exit 1
fi
$db compare --spec bench/sweeps/one_step.yaml --baseline qgpo --results "$store" \
    --speed results/perf_acting.csv --out results/one_step.md
$db perf sweep bench/sweeps/leaderboard.yaml --results "$store" \
    --speedup results/sweep_speedup.csv --out results/sweep_cost.md
$db report --results "$store" --spec bench/sweeps/leaderboard.yaml --out results/leaderboard
$db leaderboard --results "$store" --spec bench/sweeps/leaderboard.yaml --out results/LEADERBOARD.md --readme README.md
$db findings --results "$store" --spec bench/sweeps/leaderboard.yaml --checked docs/findings-checked.md \
    --out results/FINDINGS.md
