#!/usr/bin/env bash
# The chaos soak (make soak): three workers, random SIGKILL/SIGTERM/SIGSTOP, proxy faults and
# PostgreSQL connection kills under a steady load, then the invariants (every event acked or
# failed for an injected reason, every document at its newest version, nothing stuck, lost
# or stale). Writes target/soak/report.json and prints the figures and one summary line.
# Works from a fresh checkout: builds, installs and starts what it needs (scripts/deps.sh,
# scripts/services.sh, which also creates the `outbox_soak` database).
#
#   scripts/soak.sh                  about 5 minutes
#   scripts/soak.sh --quick          about 65-75 s (CI)
#   scripts/soak.sh --seed 42 ...    any outbox-soak option (--help for the list)
#
# Exit status: 0 clean, 1 an invariant was violated (the schema, index and logs are kept),
# 2 the soak could not run. Environment: CARGO_TARGET_DIR (where the binaries are).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

echo "== build (release)" >&2
cargo build --release --locked -p outbox-worker -p outbox-soak

echo "== services" >&2
scripts/deps.sh
scripts/services.sh start
export OUTBOX_SOAK_DATABASE_URL="${OUTBOX_SOAK_DATABASE_URL:-$(scripts/pg.sh url outbox_soak)}"
export OUTBOX_SOAK_ELASTICSEARCH_URL="${OUTBOX_SOAK_ELASTICSEARCH_URL:-$(scripts/engine.sh url)}"

echo "== soak: outbox-soak $*" >&2
exec "${CARGO_TARGET_DIR:-target}/release/outbox-soak" "$@"
