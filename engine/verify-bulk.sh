#!/usr/bin/env bash
# Hand check of the `_bulk` behaviour the outbox worker relies on, against whatever engine
# scripts/engine.sh started. Prints each request's HTTP status and (trimmed) response.
#   engine/verify-bulk.sh [URL]     (default: scripts/engine.sh url)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
URL="${1:-$("$ROOT/scripts/engine.sh" url)}"
IDX="outbox-verify"
ID512="$(printf 'a%.0s' $(seq 1 512))"
ID513="$(printf 'b%.0s' $(seq 1 513))"
ID513MB="$(printf '\xe2\x82\xac%.0s' $(seq 1 171))"   # 171 x U+20AC = 513 UTF-8 bytes

# long ids are shortened in the output: 40 chars then "..."
shorten() { sed -E 's/(a{40})a+/\1.../g; s/(b{40})b+/\1.../g; s/((€){20})(€)+/\1.../g'; }
req() { # method path [body] [content-type]
  local m="$1" p="$2" body="${3:-}" ct="${4:-application/json}"
  echo "### $m $p"
  if [[ -n "$body" ]]; then
    curl -sS -m 30 -w '\n-> HTTP %{http_code}\n' -X "$m" -H "Content-Type: $ct" --data-binary "$body" "$URL$p" | shorten
  else
    curl -sS -m 30 -w '\n-> HTTP %{http_code}\n' -X "$m" "$URL$p" | shorten
  fi
}
bulk() { req POST "/_bulk" "$1" application/x-ndjson; }

req GET "/_nodes/_local?filter_path=nodes.*.version"
req DELETE "/$IDX" >/dev/null || true
req PUT "/$IDX" '{"mappings":{"properties":{"n":{"type":"integer"},"s":{"type":"keyword"}}}}'

echo; echo "== index + delete with external versions"
bulk '{"index":{"_index":"'"$IDX"'","_id":"1","version":5,"version_type":"external"}}
{"n":1,"s":"one"}
{"index":{"_index":"'"$IDX"'","_id":"2","version":1,"version_type":"external"}}
{"n":2}
{"delete":{"_index":"'"$IDX"'","_id":"2","version":2,"version_type":"external"}}
{"delete":{"_index":"'"$IDX"'","_id":"never-existed","version":7,"version_type":"external"}}
'

echo; echo "== stale and equal versions (index and delete), external_gte with equal version"
bulk '{"index":{"_index":"'"$IDX"'","_id":"1","version":3,"version_type":"external"}}
{"n":3}
{"index":{"_index":"'"$IDX"'","_id":"1","version":5,"version_type":"external"}}
{"n":5}
{"delete":{"_index":"'"$IDX"'","_id":"1","version":4,"version_type":"external"}}
{"index":{"_index":"'"$IDX"'","_id":"1","version":5,"version_type":"external_gte"}}
{"n":55,"s":"gte"}
{"index":{"_index":"'"$IDX"'","_id":"2","version":1,"version_type":"external"}}
{"n":22}
'

echo; echo "== bad field type"
bulk '{"index":{"_index":"'"$IDX"'","_id":"3","version":1,"version_type":"external"}}
{"n":"not-a-number"}
{"index":{"_index":"'"$IDX"'","_id":"4","version":1,"version_type":"external"}}
{"n":4}
'

echo; echo "== invalid index name in one item"
bulk '{"index":{"_index":"Bad-Upper","_id":"1","version":1,"version_type":"external"}}
{"n":1}
{"index":{"_index":"'"$IDX"'","_id":"7","version":1,"version_type":"external"}}
{"n":7}
'

echo; echo "== 512-byte id (allowed?)"
bulk '{"index":{"_index":"'"$IDX"'","_id":"'"$ID512"'","version":1,"version_type":"external"}}
{"n":512}
'

echo; echo "== 513-byte id alone"
bulk '{"index":{"_index":"'"$IDX"'","_id":"'"$ID513"'","version":1,"version_type":"external"}}
{"n":513}
'

echo; echo "== 513-byte id mixed with a good item (whole request or per item?)"
bulk '{"index":{"_index":"'"$IDX"'","_id":"5","version":1,"version_type":"external"}}
{"n":5}
{"index":{"_index":"'"$IDX"'","_id":"'"$ID513"'","version":1,"version_type":"external"}}
{"n":513}
{"delete":{"_index":"'"$IDX"'","_id":"'"$ID513"'","version":2,"version_type":"external"}}
'

echo; echo "== 171 x '€' id (171 chars, 513 UTF-8 bytes)"
bulk '{"index":{"_index":"'"$IDX"'","_id":"'"$ID513MB"'","version":1,"version_type":"external"}}
{"n":513}
'

echo; echo "== 513-byte id, delete alone"
bulk '{"delete":{"_index":"'"$IDX"'","_id":"'"$ID513"'","version":2,"version_type":"external"}}
'

echo; echo "== create/update with external version (expected to be refused)"
bulk '{"create":{"_index":"'"$IDX"'","_id":"6","version":1,"version_type":"external"}}
{"n":6}
'

echo; echo "== auto-created index"
bulk '{"index":{"_index":"outbox-verify-auto","_id":"1","version":1,"version_type":"external"}}
{"n":1}
'

echo; echo "== read back"
req GET "/$IDX/_doc/1"
req GET "/$IDX/_doc/2"
req GET "/$IDX/_doc/5"
req DELETE "/$IDX" >/dev/null
req DELETE "/outbox-verify-auto" >/dev/null
