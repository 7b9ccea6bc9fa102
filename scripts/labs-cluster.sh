#!/usr/bin/env bash
# The cluster labs (issue 13, tests/labs_cluster.rs): a worker against a real three-node
# cluster on this machine, one node SIGKILLed mid-drain and back, the whole cluster restarted
# between acked deletes and late older index events, one node answering 429 or 503 to
# everything. One line of figures per scenario at the end (lost=, stale=,
# resurrected=, stall=). Installs and starts what it needs (PostgreSQL, the cluster), and
# stops the cluster after, unless KEEP_CLUSTER=1.
#   scripts/labs-cluster.sh                  full size (make labs-cluster)
#   LABS_SCALE=ci scripts/labs-cluster.sh    CI size (scripts/test.sh)
#   ENGINE=elasticsearch ...                 the same against Elasticsearch's test zip
#   LABS_CLUSTER_VICTIM=manager ...          (a) kills the elected cluster manager, not a data node
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export ENGINE_NODES="${ENGINE_NODES:-3}"
scripts/deps.sh
scripts/pg.sh start
export OUTBOX_TEST_DATABASE_URL="$(scripts/pg.sh url outbox_test)"
if [ -z "${KEEP_CLUSTER:-}" ]; then
  trap 'scripts/engine.sh stop >/dev/null || true' EXIT
fi
scripts/engine.sh start
export OUTBOX_TEST_CLUSTER_URLS="$(scripts/engine.sh url)"
export LABS_SCALE="${LABS_SCALE:-full}"
export LABS_REPORT="$PWD/target/labs/cluster-report.txt"
mkdir -p target/labs && : >"$LABS_REPORT"
cargo test --locked --test labs_cluster -- --ignored --nocapture --test-threads=1
echo
echo "== cluster labs ($LABS_SCALE, $ENGINE_NODES nodes of ${ENGINE:-opensearch})"
cat "$LABS_REPORT"
