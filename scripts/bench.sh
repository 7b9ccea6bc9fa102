#!/usr/bin/env bash
# The benchmarks (make bench / make bench-quick): the criterion benches (benches/), then the
# end-to-end bench command, which writes target/bench/report.json and report.svg and prints
# one summary line. Works from a fresh checkout: builds, installs and starts what it needs
# (scripts/deps.sh, scripts/services.sh, which also creates the `outbox_bench` database).
#
#   scripts/bench.sh            criterion benches, then the full end-to-end run (~15 min on 2 cores,
#                               plus the held-snapshot scenario: 1M events churned per arm, 2 pairs,
#                               each arm stopped after 15 min)
#   scripts/bench.sh --quick    end-to-end only, sized for CI (a few minutes, of which the
#                               held-snapshot scenario, 300k events per arm, takes ~5); the criterion
#                               benches need their own build of every crate (bench profile with
#                               dev-dependency features), >10 min on 2 cores, so quick skips them
#   Any other argument goes to outbox-bench (e.g. --only drain,latency --pairs 3, or --only held).
#
# Environment: CARGO_TARGET_DIR (where the binaries are); CRITERION=0 or 1 to skip or force
# the criterion benches (default: 1 in full mode, 0 with --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

quick=0
for arg in "$@"; do
  [ "$arg" = "--quick" ] && quick=1
done

echo "== build (release)" >&2
cargo build --release --locked -p outbox-worker -p outbox-bench

echo "== services" >&2
# stdout carries only outbox-bench's summary line.
scripts/deps.sh >&2
scripts/services.sh start >&2
export OUTBOX_BENCH_DATABASE_URL="${OUTBOX_BENCH_DATABASE_URL:-$(scripts/pg.sh url outbox_bench)}"
export OUTBOX_BENCH_ELASTICSEARCH_URL="${OUTBOX_BENCH_ELASTICSEARCH_URL:-$(scripts/engine.sh url)}"

if [ "${CRITERION:-$((1 - quick))}" = "1" ]; then
  echo "== criterion: codec, claim_cycle" >&2
  if [ "$quick" = 1 ]; then
    # Criterion's own quick mode: stops once the estimate is significant.
    cargo bench --locked --bench codec --bench claim_cycle -- --quick --noplot >&2
  else
    cargo bench --locked --bench codec --bench claim_cycle -- --noplot >&2
  fi
fi

echo "== end-to-end: outbox-bench $*" >&2
exec "${CARGO_TARGET_DIR:-target}/release/outbox-bench" "$@"
