#!/usr/bin/env bash
# The whole test suite against the real PostgreSQL and the real search engine.
# Starts what it needs; a fresh `outbox_test` database every run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

scripts/services.sh start
export OUTBOX_TEST_DATABASE_URL="$(scripts/pg.sh url outbox_test)"
export OUTBOX_TEST_ELASTICSEARCH_URL="$(scripts/engine.sh url)"
runuser -u postgres -- dropdb --if-exists --force outbox_test
runuser -u postgres -- createdb outbox_test

echo "== lint"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

echo "== tests"
cargo test --locked --all-targets -- --test-threads="${TEST_THREADS:-4}"
