#!/usr/bin/env bash
# The main job, end to end: services up, migrate, a worker running, an application-style
# producer for a fixed time (plus a few bad events), then a summary of what happened.
# Installs and starts what it needs (scripts/deps.sh, scripts/services.sh). Leaves PostgreSQL,
# the engine (and nothing else) running for a look afterwards.
#   DEMO_SECONDS (20)  DEMO_RATE events/s (1000)  DEMO_INDEX (demo_products)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
SECONDS_TO_RUN="${DEMO_SECONDS:-20}"
RATE="${DEMO_RATE:-1000}"
INDEX="${DEMO_INDEX:-demo_products}"
OUT=target/demo
mkdir -p "$OUT"

scripts/deps.sh
scripts/services.sh start
cargo build --release --locked -q
BIN=target/release/outbox-worker
export OUTBOX_DATABASE_URL="$(scripts/pg.sh url outbox)"
export OUTBOX_ELASTICSEARCH_URL="$(scripts/engine.sh url)"
export OUTBOX_METRICS_ADDR="${OUTBOX_METRICS_ADDR:-127.0.0.1:9464}"
ES="$OUTBOX_ELASTICSEARCH_URL"
psql_q() { psql "$OUTBOX_DATABASE_URL" -qtAX -v ON_ERROR_STOP=1 -c "$1"; }

"$BIN" migrate
# A clean slate for the demo's own tables and index.
psql_q "TRUNCATE outbox_events, outbox_replay_audit, outbox_waiting_workers; DROP TABLE IF EXISTS demo_products; DROP SEQUENCE IF EXISTS demo_product_version_seq" >/dev/null
curl -s -o /dev/null -X DELETE "$ES/$INDEX" || true
curl -s -o /dev/null -X PUT "$ES/$INDEX" -H 'Content-Type: application/json' \
  -d '{"mappings":{"properties":{"price_cents":{"type":"long"},"stock":{"type":"integer"},"name":{"type":"text"}}}}'

echo "== worker (log: $OUT/worker.log, metrics: http://$OUTBOX_METRICS_ADDR/metrics)"
"$BIN" run >"$OUT/worker.log" 2>&1 &
WORKER=$!
trap 'kill -TERM $WORKER 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://$OUTBOX_METRICS_ADDR/readyz" >/dev/null && break; sleep 0.1; done

echo "== producer: ${SECONDS_TO_RUN}s at ${RATE} events/s, 5% deletes, 2,000 products"
"$BIN" produce --index "$INDEX" --duration "$SECONDS_TO_RUN" --rate "$RATE" --clients 4 \
  --docs 2000 --delete-ratio 0.05 | tee "$OUT/producer.txt"
# Bad events an application might write: a mapping conflict, a non-object payload, an unknown op.
psql_q "INSERT INTO outbox_events (index_name, doc_id, op, payload) VALUES
  ('$INDEX', 'bad-price', 'index', '{\"price_cents\": \"twelve\"}'),
  ('$INDEX', 'bad-payload', 'index', '[1,2,3]'),
  ('$INDEX', 'bad-op', 'upsert', '{}')" >/dev/null

echo "== waiting for the worker to drain"
for _ in $(seq 1 600); do
  left=$(psql_q "SELECT count(*) FROM outbox_events WHERE status <> 'failed'")
  [ "$left" = 0 ] && break
  sleep 0.1
done
curl -s -o /dev/null -X POST "$ES/$INDEX/_refresh"
METRICS=$(curl -s "http://$OUTBOX_METRICS_ADDR/metrics")
kill -TERM $WORKER; wait $WORKER || true; trap - EXIT

produced=$(awk '{print $2}' "$OUT/producer.txt")
docs_engine=$(curl -s "$ES/$INDEX/_count" | sed -E 's/.*"count":([0-9]+).*/\1/')
docs_db=$(psql_q "SELECT count(*) FROM demo_products")
# Compare every product row with its document: the same version (external versioning).
curl -s "$ES/$INDEX/_search?size=10000&version=true&_source=false&filter_path=hits.hits._id,hits.hits._version" \
  | grep -o '"_id":"[^"]*","_version":[0-9]*' | sed -E 's/"_id":"([^"]*)","_version":([0-9]+)/\1 \2/' \
  | sort >"$OUT/engine_versions.txt"
psql_q "SELECT id || ' ' || version FROM demo_products" | sort >"$OUT/db_versions.txt"
mismatch=$(comm -3 "$OUT/engine_versions.txt" "$OUT/db_versions.txt" | wc -l)
# quantile Q [HISTOGRAM [LABEL]]: a quantile from the Prometheus histogram buckets (default
# outbox_end_to_end_seconds), of the series whose labels hold LABEL (e.g. stage="bulk").
quantile() {
  echo "$METRICS" | awk -v q="$1" -v name="${2:-outbox_end_to_end_seconds}_bucket{" -v label="${3:-}" '
    index($0, name) == 1 && (label == "" || index($0, label)) { match($0, /le="[^"]+"/); le=substr($0, RSTART+4, RLENGTH-5);
      n++; les[n]=le; cum[n]=$NF }
    END { total=cum[n]; if (total==0) { print "n/a"; exit }
      target=q*total; prev_le=0; prev_c=0
      for (i=1;i<=n;i++) { if (cum[i]>=target) { if (les[i]=="+Inf") { print ">" prev_le*1000 " ms"; exit }
          frac=(cum[i]==prev_c)?1:(target-prev_c)/(cum[i]-prev_c); printf "%.2f ms\n", (prev_le+(les[i]-prev_le)*frac)*1000; exit }
        prev_le=les[i]; prev_c=cum[i] } }'
}
metric() { echo "$METRICS" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s+=$NF} END {print s+0}'; }

echo
echo "== summary"
echo "events produced:        $produced (+3 bad events)"
echo "events acked:           $(metric outbox_acked_total)   (superseded within a claim: $(metric outbox_superseded_total))"
echo "retries scheduled:      $(metric outbox_retry_scheduled_total)"
echo "failed, by reason:"
psql_q "SELECT '  ' || error_reason || ': ' || count(*) FROM outbox_events WHERE status = 'failed' GROUP BY error_reason ORDER BY error_reason"
echo "end-to-end latency (insert -> ack): p50 $(quantile 0.5), p99 $(quantile 0.99)"
echo "  by stage (p50 / p99; runbook §6.1):"
for stage in wait claim encode queue bulk ack; do
  printf '    %-7s %s / %s\n' "$stage" "$(quantile 0.5 outbox_stage_seconds "stage=\"$stage\"")" \
    "$(quantile 0.99 outbox_stage_seconds "stage=\"$stage\"")"
done
echo "documents in the engine: $docs_engine; product rows in PostgreSQL: $docs_db; version mismatches: $mismatch"
echo "services are still running: PostgreSQL $(scripts/pg.sh url outbox), engine $ES (stop: make stop)"
echo "the operator console:   OUTBOX_DATABASE_URL=$(scripts/pg.sh url outbox) $BIN console   (then open http://127.0.0.1:9465)"
