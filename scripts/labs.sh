#!/usr/bin/env bash
# The runbook's regression entry: labs v1-v4, the PostgreSQL faults and the long analytics
# transactions (10 min at 800 events/s under three overlapping 120 s snapshots), at full size,
# against the real services, one line of figures per scenario at the end. Installs and
# starts what it needs (lab v2 puts nginx in front of the engine), so it runs first too.
#   LABS_SCALE=ci scripts/labs.sh   runs them at CI size (as `make test` does)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
scripts/deps.sh
scripts/services.sh start
export OUTBOX_TEST_DATABASE_URL="$(scripts/pg.sh url outbox_test)"
export OUTBOX_TEST_ELASTICSEARCH_URL="$(scripts/engine.sh url)"
export LABS_SCALE="${LABS_SCALE:-full}"
export LABS_REPORT="$PWD/target/labs/report.txt"
mkdir -p target/labs && : >"$LABS_REPORT"
cargo test --locked --test labs -- --nocapture
echo
echo "== labs ($LABS_SCALE)"
cat "$LABS_REPORT"
