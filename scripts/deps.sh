#!/usr/bin/env bash
# The Debian packages the make targets need besides the services, in one place. Every
# target's script runs it before `scripts/services.sh start` (which installs PostgreSQL and
# fetches the engine), so each target works on a fresh machine whichever runs first.
#   curl         the scripts talk HTTP to the engine and the worker (engine.sh, demo.sh)
#   a JDK, maven scripts/engine.sh compiles and runs the embedded OpenSearch
#   nginx-light  tests put it in front of the engine: TLS (tests/security.rs) and a request
#                body limit, the real way a 413 arrives (lab v2, bad inputs)
#   openssl      the CA and certificates of tests/security.rs
#   python3      the checks of scripts/promtool.sh; with python3-venv, the browser tests'
#                venv (scripts/browser-venv.sh installs Playwright from PyPI into it)
#   chromium     the headless browser of the console's test (tests/console.rs); Playwright
#                drives Debian's build, its own browser download is not used
#
# Idempotent and quick: it looks for each command first and calls apt-get only for what is
# missing. Installs start no service (nginx runs in the foreground, started by the tests).
# `apt-get update` runs only when an install fails (missing or stale package lists).
#
#   scripts/deps.sh
set -euo pipefail

log() { echo "deps: $*" >&2; }

have() { command -v "$1" >/dev/null 2>&1; }

# The JDK scripts/engine.sh would use (its os_java_home): OPENSEARCH_JAVA_HOME, Debian's 17,
# JAVA_HOME, else the one of `java` on PATH. It compiles with javac, so a JRE is not enough.
have_jdk() {
  [ -n "${OPENSEARCH_JAVA_HOME:-}" ] && return 0
  [ -x /usr/lib/jvm/java-17-openjdk-amd64/bin/javac ] && return 0
  [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/javac" ] && return 0
  have javac
}

missing=()
have curl || missing+=(curl)
have_jdk || missing+=(default-jdk-headless)
have "${MVN:-mvn}" || missing+=(maven)
{ have nginx || [ -x /usr/sbin/nginx ]; } || missing+=(nginx-light)
have openssl || missing+=(openssl)
have python3 || missing+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
{ have chromium || [ -x /usr/bin/chromium ]; } || missing+=(chromium)

[ "${#missing[@]}" = 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  log "missing packages: ${missing[*]}; install them as root: apt-get install --no-install-recommends ${missing[*]}"
  exit 1
fi

log "installing ${missing[*]} (no service is started)"
# A policy-rc.d answering 101 keeps maintainer scripts from starting services (nginx's
# would take port 80). Put one in place only if none exists, and remove only ours.
policy=/usr/sbin/policy-rc.d
ours=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# temporary, scripts/deps.sh\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  ours=1
fi
out="$(mktemp)"
cleanup() {
  if [ -n "$ours" ]; then rm -f "$policy"; fi
  rm -f "$out"
}
trap cleanup EXIT

install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$out" 2>&1
}
if ! install; then
  log "install failed; updating the package lists and trying again"
  if ! { apt-get update -qq >"$out" 2>&1 && install; }; then
    cat "$out" >&2
    log "could not install ${missing[*]}"
    exit 1
  fi
fi
