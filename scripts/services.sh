#!/usr/bin/env bash
# Start (or stop) everything the demo and the tests need: PostgreSQL and the search engine.
# ENGINE=opensearch (default) or elasticsearch picks the engine; ENGINE_NODES=3 makes it a
# three-node cluster on ports 9211-9213 (scripts/engine.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
case "${1:-start}" in
  start)
    "$here/pg.sh" start
    "$here/engine.sh" start
    ;;
  stop)
    "$here/engine.sh" stop || true
    "$here/pg.sh" stop || true
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
