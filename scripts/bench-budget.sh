#!/usr/bin/env bash
# The "Request budget" tables of BENCHMARKS.md: the fleet benchmark with the build before the
# budget work (commit 7892586) as the baseline, latency-bound and under GitLab.com's throttle.
# Takes about 12 minutes on 2 cores. Needs GNU time (see BENCHMARKS.md).
set -euo pipefail
cd "$(dirname "$0")/.."
base="${PATROL_BASELINE_COMMIT:-7892586}"
tree="$(mktemp -d)"
trap 'git worktree remove --force "$tree" >/dev/null 2>&1 || true' EXIT
git worktree add --detach "$tree" "$base" >/dev/null
CARGO_TARGET_DIR="$PWD/target/baseline" cargo build --release --locked --manifest-path "$tree/Cargo.toml" --bin patrol
export PATROL_BENCH_BASELINE="$PWD/target/baseline/release/patrol" PATROL_BENCH_SHARDS=1
PATROL_BENCH_RATE_LIMIT=2000 PATROL_BENCH_SIZES=1000 PATROL_BENCH_COMMANDS=rotate cargo bench --bench fleet
PATROL_BENCH_RATE_LIMIT=2000 PATROL_BENCH_SIZES=10000 PATROL_BENCH_COMMANDS=audit cargo bench --bench fleet
PATROL_BENCH_SIZES=1000 PATROL_BENCH_COMMANDS=rotate cargo bench --bench fleet
PATROL_BENCH_FLEET=cold PATROL_BENCH_SIZES=1000 PATROL_BENCH_COMMANDS=rotate cargo bench --bench fleet
PATROL_BENCH_SIZES=10000 cargo bench --bench fleet
PATROL_BENCH_CONCURRENCY=16 PATROL_BENCH_SIZES=1000 PATROL_BENCH_COMMANDS=rotate cargo bench --bench fleet
