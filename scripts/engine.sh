#!/usr/bin/env bash
# Start/stop a real search engine with the Elasticsearch `_bulk` HTTP API on 127.0.0.1,
# for the outbox worker's integration tests. See engine/README.md.
#
#   scripts/engine.sh start|stop|status|url
#   ENGINE_NODES=3 scripts/engine.sh start|stop|status|url|restart
#   ENGINE_NODES=3 scripts/engine.sh node-kill|node-stop|node-start N
#
# Environment:
#   ENGINE              opensearch (default): OpenSearch 2.19.6 embedded in a JVM (engine/opensearch)
#                       elasticsearch: Elasticsearch's integ-test-zip from Maven Central
#   ENGINE_NODES        1 (default): one node on ENGINE_PORT. 3 (or more): a cluster of that many
#                       nodes on this machine, its own cluster name, ports, data and state
#                       (target/engine/<engine>-cluster/node-N), discovery through
#                       discovery.seed_hosts and cluster.initial_cluster_manager_nodes;
#                       `url` prints the nodes' URLs separated by commas
#   ENGINE_CLUSTER_PORT   HTTP port of node 1 of a cluster; node N gets it + N - 1 (default 9211;
#                       not 9200, the single node's, nor 9201, the Elasticsearch phase of test.sh)
#   ENGINE_CLUSTER_TRANSPORT_PORT  transport port of node 1 (default 9411; outside 9300-9399)
#   ENGINE_CLUSTER_HEAP  JVM heap of each cluster node (default -Xms384m -Xmx512m)
#   ENGINE_PORT         HTTP port (default 9200)
#   ENGINE_TRANSPORT_PORT  transport port or range (default 9300-9399)
#   ENGINE_HEAP         JVM heap for -Xms/-Xmx (default: -Xms512m -Xmx1g)
#   ENGINE_START_TIMEOUT  seconds to wait for the node to answer (default 180)
#   ENGINE_SETTINGS     extra node settings, space separated key=value
#                       (e.g. "thread_pool.write.size=1 thread_pool.write.queue_size=1")
#   OPENSEARCH_JAVA_HOME  JDK 17+ for OpenSearch (default /usr/lib/jvm/java-17-openjdk-amd64,
#                       else $JAVA_HOME, else java on PATH)
#   ES_VERSION          Elasticsearch version (default 9.2.4)
#   ES_JAVA_HOME        JDK for Elasticsearch (default: newest of /usr/lib/jvm/temurin-25-jdk-amd64,
#                       java-21-openjdk-amd64, ...; 9.x needs 21+)
#   ES_USER             non-root user that runs Elasticsearch when invoked as root (default outboxes)
#   MVN                 maven command (default mvn); MAVEN_ARGS extra maven arguments
#                       (e.g. -Dmaven.repo.local=...)
#
# `stop` without ENGINE set stops every engine started from this checkout (ENGINE_NODES=3: every
# cluster node). node-kill sends SIGKILL to node N, node-stop SIGTERM; node-start starts it again
# on its data; restart stops the whole cluster and starts it again on its data.
# State lives in target/engine/<engine>/ (pid, engine.log, node home with a fresh data dir
# per start); build caches in target/engine/ and ~/.m2.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENGINE_EXPLICIT="${ENGINE+set}"
ENGINE="${ENGINE:-opensearch}"
PORT="${ENGINE_PORT:-9200}"
TRANSPORT_PORT="${ENGINE_TRANSPORT_PORT:-9300-9399}"
HEAP="${ENGINE_HEAP:--Xms512m -Xmx1g}"
START_TIMEOUT="${ENGINE_START_TIMEOUT:-180}"
ES_VERSION="${ES_VERSION:-9.2.4}"
ES_USER="${ES_USER:-outboxes}"
MVN="${MVN:-mvn}"
MAVEN_ARGS="${MAVEN_ARGS:-}"
read -r -a EXTRA_SETTINGS <<<"${ENGINE_SETTINGS:-}"
URL="http://127.0.0.1:${PORT}"
ENGINE_ROOT="$ROOT/target/engine"
NODES="${ENGINE_NODES:-1}"
CLUSTER_PORT="${ENGINE_CLUSTER_PORT:-9211}"
CLUSTER_TRANSPORT_PORT="${ENGINE_CLUSTER_TRANSPORT_PORT:-9411}"

case "$ENGINE" in
  opensearch|elasticsearch) ;;
  *) echo "engine.sh: unknown ENGINE=$ENGINE (want opensearch or elasticsearch)" >&2; exit 2 ;;
esac
[[ "$NODES" =~ ^[1-9]$ ]] || { echo "engine.sh: ENGINE_NODES=$NODES: want 1 to 9" >&2; exit 2; }
STATE="$ENGINE_ROOT/$ENGINE"
PIDFILE="$STATE/engine.pid"
LOG="$STATE/engine.log"
# Where a node keeps its home (OpenSearch) or data (Elasticsearch), whether `launch` wipes it,
# and the settings that make it one node of a cluster (none for the single node).
NODE_DIR="$STATE"
FRESH=1
NODE_SETTINGS=()
CLUSTER_STATE="$ENGINE_ROOT/$ENGINE-cluster"

log() { echo "engine.sh: $*" >&2; }
die() { log "$*"; exit 1; }

healthy() {
  curl -fsS -m 5 -o /dev/null "$URL/_cluster/health?wait_for_status=yellow&timeout=1s" 2>/dev/null
}

# "<distribution> <version>" of whatever answers on the port, e.g. "opensearch 2.19.6".
# (Elasticsearch's integ-test-zip has no `GET /` handler, so ask the nodes info API; only
# Elasticsearch sends the X-elastic-product header.)
describe() {
  local resp num dist=opensearch
  resp="$(curl -fsS -m 5 -i "$URL/_nodes/_local?filter_path=nodes.*.version" 2>/dev/null | tr -d '\r\n')" \
    || return 1
  num="$(printf '%s' "$resp" | sed -n 's/.*"version"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p')"
  if printf '%s' "$resp" | grep -qi 'x-elastic-product:[[:space:]]*Elasticsearch'; then
    dist=elasticsearch
  fi
  echo "$dist ${num:-unknown}"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

# A pid file holds the id of the session / process group leader we started (the JVM for
# OpenSearch, runuser or the Elasticsearch launcher for Elasticsearch). It counts as alive while
# any process of that group lives; a leader whose command line is not ours is a reused pid.
group_alive() {
  local pid="$1"
  if [[ -r "/proc/$pid/cmdline" ]] \
     && ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE 'EmbeddedOpenSearch|elasticsearch'; then
    return 1
  fi
  kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null
}

pid_from() { # pid file -> pid of a live group, or fail
  local pid
  [[ -f "$1" ]] || return 1
  pid="$(cat "$1" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] && group_alive "$pid" || return 1
  echo "$pid"
}

running_pid() { pid_from "$PIDFILE"; }

print_listening() {
  local what
  what="$(describe || echo "$ENGINE unknown")"
  echo "$what listening on $URL"
}

fail_with_log() {
  log "$*"
  if [[ -f "$LOG" ]]; then
    log "last 50 lines of $LOG:"
    tail -n 50 "$LOG" >&2
  fi
  if ((NODES > 1)); then
    cluster_stop >/dev/null 2>&1 || true
  else
    stop_one "$ENGINE" >/dev/null 2>&1 || true
  fi
  exit 1
}

# Maven, quiet; its output is shown only when it fails.
run_mvn() {
  local jh="$1" out rc=0
  shift
  out="$(mktemp)"
  # shellcheck disable=SC2086
  JAVA_HOME="$jh" "$MVN" -B -q -Dstyle.color=never $MAVEN_ARGS "$@" >"$out" 2>&1 || rc=$?
  if ((rc)); then
    cat "$out" >&2
  fi
  rm -f "$out"
  return "$rc"
}

# ---------------------------------------------------------------- OpenSearch (embedded)
os_java_home() {
  if [[ -n "${OPENSEARCH_JAVA_HOME:-}" ]]; then echo "$OPENSEARCH_JAVA_HOME"
  elif [[ -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]]; then echo /usr/lib/jvm/java-17-openjdk-amd64
  elif [[ -n "${JAVA_HOME:-}" ]]; then echo "$JAVA_HOME"
  else dirname "$(dirname "$(readlink -f "$(command -v java)")")"
  fi
}

os_build() {
  local src="$ROOT/engine/opensearch" build="$ENGINE_ROOT/opensearch-build" jh jars=()
  jh="$(os_java_home)"
  mkdir -p "$build"
  # Regenerate when the pom changed or a jar of the cached classpath is gone (other maven repo).
  local stale=0 jar
  if [[ ! -s "$build/classpath.txt" || "$src/pom.xml" -nt "$build/classpath.txt" ]]; then
    stale=1
  else
    IFS=: read -r -a jars <"$build/classpath.txt" || true
    for jar in "${jars[@]}"; do [[ -f "$jar" ]] || { stale=1; break; }; done
  fi
  if ((stale)); then
    log "resolving OpenSearch dependencies with maven (first run downloads ~60 MB)"
    run_mvn "$jh" -f "$src/pom.xml" dependency:build-classpath \
      -Dmdep.outputFile="$build/classpath.txt.tmp" \
      || die "maven could not resolve engine/opensearch/pom.xml"
    mv "$build/classpath.txt.tmp" "$build/classpath.txt"
    rm -rf "$build/classes"
  fi
  if [[ ! -f "$build/classes/.stamp" ]] \
     || [[ -n "$(find "$src/src" -newer "$build/classes/.stamp" -type f -print -quit)" ]]; then
    log "compiling engine/opensearch/src"
    rm -rf "$build/classes"
    mkdir -p "$build/classes"
    local sources=()
    mapfile -t sources < <(find "$src/src/main/java" -name '*.java')
    "$jh/bin/javac" --release 17 -nowarn -d "$build/classes" -cp "$(cat "$build/classpath.txt")" \
      "${sources[@]}"
    touch "$build/classes/.stamp"
  fi
}

os_launch() {
  local build="$ENGINE_ROOT/opensearch-build" home="$NODE_DIR/home" jh
  jh="$(os_java_home)"
  if ((FRESH)); then rm -rf "$home"; fi
  mkdir -p "$home/config" "$home/data" "$home/logs" "$home/modules" "$home/plugins"
  cp "$ROOT/engine/opensearch/config/log4j2.properties" "$home/config/"
  if ((FRESH)); then : >"$LOG"; fi
  # shellcheck disable=SC2086
  # shellcheck disable=SC2016  # expanded by the inner bash: it records its own pid, then execs
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
    "$jh/bin/java" $HEAP -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
      -Dfile.encoding=UTF-8 -Dlog4j2.disable.jmx=true -Dlog4j.shutdownHookEnabled=false \
      -cp "$build/classes:$(cat "$build/classpath.txt")" outbox.engine.EmbeddedOpenSearch "$home" \
      "http.port=$PORT" "transport.port=$TRANSPORT_PORT" ${NODE_SETTINGS[@]+"${NODE_SETTINGS[@]}"} \
      ${EXTRA_SETTINGS[@]+"${EXTRA_SETTINGS[@]}"} \
      </dev/null >>"$LOG" 2>&1 &
}

# ---------------------------------------------------------------- Elasticsearch (integ-test-zip)
es_java_home() {
  if [[ -n "${ES_JAVA_HOME:-}" ]]; then echo "$ES_JAVA_HOME"; return; fi
  local d
  for d in /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/java-25-openjdk-amd64 \
           /usr/lib/jvm/temurin-21-jdk-amd64 /usr/lib/jvm/java-21-openjdk-amd64; do
    if [[ -x "$d/bin/java" ]]; then echo "$d"; return; fi
  done
  die "no JDK 21+ found for Elasticsearch $ES_VERSION; set ES_JAVA_HOME"
}

es_user() { if [[ "$(id -u)" == 0 ]]; then echo "$ES_USER"; else id -un; fi; }

es_build() {
  local dist="$ENGINE_ROOT/elasticsearch-dist" zip home
  zip="$dist/elasticsearch-$ES_VERSION.zip"
  home="$dist/elasticsearch-$ES_VERSION"
  mkdir -p "$dist"
  if [[ ! -x "$home/bin/elasticsearch" ]]; then
    if [[ ! -s "$zip" ]]; then
      log "resolving org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip (~100 MB, cached in ~/.m2)"
      # Maven Central has the zip but (for 9.x) no POM; maven warns and copies it anyway.
      run_mvn "$(os_java_home)" -f "$ROOT/engine/opensearch/pom.xml" dependency:copy \
        -Dartifact="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip" \
        -DoutputDirectory="$dist/download" \
        || die "could not resolve the Elasticsearch $ES_VERSION integ-test-zip from Maven Central"
      mv "$dist/download/elasticsearch-$ES_VERSION.zip" "$zip"
      rmdir "$dist/download" 2>/dev/null || true
    fi
    log "unpacking $zip"
    rm -rf "$home" "$dist/unpack"
    mkdir -p "$dist/unpack"
    if command -v unzip >/dev/null; then
      unzip -q "$zip" -d "$dist/unpack"
    else
      (cd "$dist/unpack" && "$(os_java_home)/bin/jar" xf "$zip")
      chmod -R a+x "$dist/unpack"/*/bin
    fi
    cp -a "$dist/unpack/elasticsearch-$ES_VERSION/config" "$dist/unpack/elasticsearch-$ES_VERSION/config.dist"
    mv "$dist/unpack/elasticsearch-$ES_VERSION" "$home"
    rmdir "$dist/unpack"
    rm -f "$zip"   # the copy in the maven repository stays
  fi
  if [[ "$(id -u)" == 0 ]]; then
    if ! id -u "$ES_USER" >/dev/null 2>&1; then
      log "creating system user $ES_USER (Elasticsearch refuses to run as root)"
      useradd --system --no-create-home --shell /usr/sbin/nologin "$ES_USER"
    fi
  fi
}

es_launch() {
  local dist="$ENGINE_ROOT/elasticsearch-dist" home user jh data logs conf opts=()
  home="$dist/elasticsearch-$ES_VERSION"
  jh="$(es_java_home)"
  user="$(es_user)"
  data="$NODE_DIR/data"
  logs="$NODE_DIR/logs"
  conf="$NODE_DIR/config"
  if ((FRESH)); then
    rm -rf "$data" "$logs" "$conf"
    : >"$LOG"
  fi
  if [[ ! -d "$conf" ]]; then
    cp -a "$home/config.dist" "$conf"   # a config of its own (ES writes a keystore into it)
  fi
  mkdir -p "$data" "$logs"
  if [[ "$(id -u)" == 0 ]]; then
    chown -R "$user" "$home" "$data" "$logs" "$conf"
    runuser -u "$user" -- test -x "$home/bin/elasticsearch" -a -w "$data" \
      || die "user $user cannot reach $home (a parent directory is not world-traversable?)"
  fi
  # The integ-test-zip's module set decides which settings exist.
  if [[ -d "$home/modules/x-pack-security" ]]; then
    opts+=(-Expack.security.enabled=false)
  fi
  if [[ -d "$home/modules/x-pack-ml" ]]; then
    opts+=(-Expack.ml.enabled=false)
  fi
  local single=(-Ediscovery.type=single-node -Ecluster.name=outbox-test -Enode.name=outbox-test-node)
  ((${#NODE_SETTINGS[@]})) && single=()
  local cmd=(env "ES_JAVA_HOME=$jh" "ES_JAVA_OPTS=$HEAP" "ES_PATH_CONF=$conf"
    "$home/bin/elasticsearch"
    ${single[@]+"${single[@]}"} -Enetwork.host=127.0.0.1
    "-Ehttp.port=$PORT" "-Etransport.port=$TRANSPORT_PORT"
    -Ecluster.routing.allocation.disk.threshold_enabled=false
    -Eaction.auto_create_index=true
    "-Epath.data=$data" "-Epath.logs=$logs"
    ${opts[@]+"${opts[@]}"})
  local kv
  for kv in ${NODE_SETTINGS[@]+"${NODE_SETTINGS[@]}"} ${EXTRA_SETTINGS[@]+"${EXTRA_SETTINGS[@]}"}; do
    cmd+=("-E$kv")
  done
  if [[ "$(id -u)" == 0 ]]; then
    cmd=(runuser -u "$user" -- "${cmd[@]}")
  fi
  # shellcheck disable=SC2016  # expanded by the inner bash: it records its own pid, then execs
  setsid bash -c 'echo $$ >"$0"; cd "$1" && shift && exec "$@"' "$PIDFILE" "$home" "${cmd[@]}" \
    </dev/null >>"$LOG" 2>&1 &
}

# ---------------------------------------------------------------- a cluster (ENGINE_NODES > 1)
node_url() { echo "http://127.0.0.1:$((CLUSTER_PORT + $1 - 1))"; }

# Point the globals the single-node functions use at node $1 of the cluster.
set_node() {
  local i="$1" seeds=() managers=() k
  NODE_DIR="$CLUSTER_STATE/node-$i"
  STATE="$NODE_DIR"
  PIDFILE="$NODE_DIR/engine.pid"
  LOG="$NODE_DIR/engine.log"
  PORT=$((CLUSTER_PORT + i - 1))
  URL="http://127.0.0.1:$PORT"
  TRANSPORT_PORT=$((CLUSTER_TRANSPORT_PORT + i - 1))
  HEAP="${ENGINE_CLUSTER_HEAP:--Xms384m -Xmx512m}"
  for k in $(seq 1 "$NODES"); do
    seeds+=("127.0.0.1:$((CLUSTER_TRANSPORT_PORT + k - 1))")
    managers+=("outbox-node-$k")
  done
  local joined_seeds joined_managers
  joined_seeds="$(IFS=,; echo "${seeds[*]}")"
  joined_managers="$(IFS=,; echo "${managers[*]}")"
  NODE_SETTINGS=("cluster.name=outbox-cluster" "node.name=outbox-node-$i"
    "discovery.seed_hosts=$joined_seeds")
  if [[ "$ENGINE" == opensearch ]]; then
    # The launcher's default is single-node discovery; zen is OpenSearch's own.
    NODE_SETTINGS+=("discovery.type=zen" "cluster.initial_cluster_manager_nodes=$joined_managers")
  else
    NODE_SETTINGS+=("cluster.initial_master_nodes=$joined_managers")
  fi
  mkdir -p "$NODE_DIR"
}

cluster_urls() {
  local i urls=()
  for i in $(seq 1 "$NODES"); do urls+=("$(node_url "$i")"); done
  (IFS=,; echo "${urls[*]}")
}

launch_node() { # $1: node number; FRESH decides whether its data is wiped
  set_node "$1"
  if running_pid >/dev/null; then return 0; fi
  port_in_use && die "port $PORT (node $1) is in use by something else"
  rm -f "$PIDFILE"
  case "$ENGINE" in
    opensearch) os_launch ;;
    elasticsearch) es_launch ;;
  esac
  for _ in $(seq 1 50); do [[ -s "$PIDFILE" ]] && break; sleep 0.1; done
}

# Every node answers and sees all the others; then no shard is left unassigned.
wait_cluster() {
  local deadline=$((SECONDS + START_TIMEOUT)) i ok
  while ((SECONDS < deadline)); do
    ok=1
    for i in $(seq 1 "$NODES"); do
      set_node "$i"
      running_pid >/dev/null || fail_with_log "node $i exited before the cluster formed"
      curl -fsS -m 5 -o /dev/null \
        "$URL/_cluster/health?wait_for_nodes=$NODES&wait_for_status=green&timeout=1s" 2>/dev/null || ok=0
    done
    ((ok)) && return 0
    sleep 1
  done
  fail_with_log "the $NODES-node cluster did not form within ${START_TIMEOUT}s"
}

# New indices get one replica (the engines' default, made explicit): every shard has a copy
# on a second node, so one node lost loses nothing acked.
put_replica_template() {
  local body='{"index_patterns":["*"],"order":0,"settings":{"number_of_replicas":1}}'
  curl -fsS -m 10 -o /dev/null -X PUT "$(node_url 1)/_template/outbox-one-replica" \
    -H 'Content-Type: application/json' -d "$body" \
    || die "could not put the one-replica template"
}

cluster_start() {
  local started=$SECONDS i
  mkdir -p "$CLUSTER_STATE"
  case "$ENGINE" in
    opensearch) os_build ;;
    elasticsearch) es_build ;;
  esac
  local fresh="$FRESH"
  for i in $(seq 1 "$NODES"); do FRESH="$fresh" launch_node "$i"; done
  wait_cluster
  ((fresh)) && put_replica_template
  log "$ENGINE cluster of $NODES nodes up in $((SECONDS - started))s (logs: $CLUSTER_STATE/node-*/engine.log)"
  set_node 1
  echo "$(describe || echo "$ENGINE unknown") cluster of $NODES nodes listening on $(cluster_urls)"
}

cluster_stop() {
  local i
  for i in $(seq 1 "$NODES"); do
    set_node "$i"
    stop_one "node-$i" "$NODE_DIR" >/dev/null
  done
  echo "$ENGINE cluster stopped"
}

cluster_status() {
  local i up=0
  for i in $(seq 1 "$NODES"); do
    set_node "$i"
    if healthy; then up=$((up + 1)); echo "node $i up on $URL"; else echo "node $i down ($URL)"; fi
  done
  ((up == NODES))
}

node_arg() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] && (($1 >= 1 && $1 <= NODES)) \
    || { log "want a node number from 1 to $NODES"; exit 2; }
}

node_kill() {
  node_arg "$1"
  set_node "$1"
  local pid
  pid="$(running_pid)" || die "node $1 is not running"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"
  for _ in $(seq 1 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$PIDFILE"
  echo "node $1 killed"
}

node_start() {
  node_arg "$1"
  FRESH=0 launch_node "$1"
  set_node "$1"
  local deadline=$((SECONDS + START_TIMEOUT))
  until curl -fsS -m 5 -o /dev/null "$URL/_cluster/health?wait_for_nodes=$NODES&timeout=1s" 2>/dev/null; do
    running_pid >/dev/null || fail_with_log "node $1 exited before it joined"
    ((SECONDS < deadline)) || fail_with_log "node $1 did not join within ${START_TIMEOUT}s"
    sleep 1
  done
  echo "node $1 up on $URL"
}

# ---------------------------------------------------------------- commands
wait_healthy() {
  local deadline=$((SECONDS + START_TIMEOUT)) pid
  while ((SECONDS < deadline)); do
    if healthy; then return 0; fi
    pid="$(running_pid)" || fail_with_log "$ENGINE exited before it answered on $URL"
    sleep 1
  done
  fail_with_log "$ENGINE did not answer on $URL within ${START_TIMEOUT}s"
}

cmd_start() {
  local pid started=$SECONDS
  mkdir -p "$STATE"
  if pid="$(running_pid)"; then
    local oldport
    oldport="$(cat "$STATE/engine.port" 2>/dev/null || echo "?")"
    [[ "$oldport" == "$PORT" ]] \
      || die "$ENGINE from this checkout already runs (pid $pid) on port $oldport; stop it first"
    # ours and alive: healthy now, or still starting from another invocation
    wait_healthy
    print_listening
    return 0
  fi
  if healthy; then
    local what
    what="$(describe || echo unknown)"
    if [[ "$what" == "$ENGINE "* ]]; then
      print_listening
      return 0
    fi
    die "port $PORT already serves '$what' (not $ENGINE); stop it first (scripts/engine.sh stop)"
  fi
  port_in_use && die "port $PORT is in use by something that is not a healthy engine"
  rm -f "$PIDFILE"
  echo "$PORT" >"$STATE/engine.port"
  case "$ENGINE" in
    opensearch) os_build; os_launch ;;
    elasticsearch) es_build; es_launch ;;
  esac
  # wait for the launcher to write the pid file
  for _ in $(seq 1 50); do [[ -s "$PIDFILE" ]] && break; sleep 0.1; done
  wait_healthy
  log "$ENGINE started in $((SECONDS - started))s (log: $LOG)"
  print_listening
}

stop_one() { # $1: name for messages; $2: state directory (default target/engine/$1)
  local engine="$1" state="${2:-$ENGINE_ROOT/$1}" pid
  local pidfile="$state/engine.pid"
  if pid="$(pid_from "$pidfile")"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
      kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null; then
      log "$engine (pid $pid) still alive after 30s, sending SIGKILL"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do
        kill -0 -- "-$pid" 2>/dev/null || kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
    fi
    echo "$engine stopped"
  fi
  rm -f "$pidfile" "$state/engine.port"
}

cmd_stop() {
  if ((NODES > 1)); then
    if [[ -n "$ENGINE_EXPLICIT" ]]; then
      cluster_stop
    else
      ENGINE=opensearch CLUSTER_STATE="$ENGINE_ROOT/opensearch-cluster" cluster_stop
      ENGINE=elasticsearch CLUSTER_STATE="$ENGINE_ROOT/elasticsearch-cluster" cluster_stop
    fi
  elif [[ -n "$ENGINE_EXPLICIT" ]]; then
    stop_one "$ENGINE"
  else
    stop_one opensearch
    stop_one elasticsearch
  fi
}

cmd_status() {
  if healthy; then
    print_listening
    return 0
  fi
  echo "no healthy engine on $URL"
  return 1
}

if ((NODES > 1)); then
  case "${1:-}" in
    start) cluster_start ;;
    stop) cmd_stop ;;
    status) cluster_status ;;
    url) cluster_urls ;;
    restart) cluster_stop >/dev/null; FRESH=0 cluster_start ;;
    node-kill) node_kill "${2:-}" ;;
    node-stop) node_arg "${2:-}"; set_node "$2"; stop_one "node-$2" "$NODE_DIR" ;;
    node-start) node_start "${2:-}" ;;
    *) echo "usage: ENGINE_NODES=$NODES [ENGINE=opensearch|elasticsearch] $0 start|stop|status|url|restart|node-kill N|node-stop N|node-start N" >&2; exit 2 ;;
  esac
  exit 0
fi

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  url) echo "$URL" ;;
  *) echo "usage: [ENGINE=opensearch|elasticsearch] [ENGINE_PORT=9200] $0 start|stop|status|url" >&2; exit 2 ;;
esac
