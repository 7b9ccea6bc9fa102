#!/usr/bin/env bash
# Checks the operator surface under deploy/ (see deploy/README.md):
#   1. promtool check rules   deploy/prometheus/alerts.yml
#   2. promtool test rules    deploy/prometheus/alerts_test.yml
#   3. promtool check config  deploy/prometheus/prometheus.yml (also loads alerts.yml)
#   4. deploy/grafana/dashboard.json parses
#   5. consistency with src/metrics.rs: every metric the worker exports has a dashboard
#      panel; every metric an alert or a panel queries is exported (a renamed metric fails);
#      every alert has a firing and a not-firing unit test; runbook anchors exist in
#      docs/runbook.md (when that file exists).
# promtool comes from Debian's `prometheus` package, installed here when missing (root
# only); the Prometheus service that package ships is never left running.
#
#   scripts/promtool.sh            run every check, exit non-zero on the first failure
# Environment: PROMTOOL  promtool to use (default: promtool on PATH, installed if missing)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "promtool.sh: $*" >&2; }

# Is anything listening on TCP port $1 (IPv4 or IPv6)? Reads /proc, needs no ss/netstat.
listening_on() {
  local hex; hex=$(printf ':%04X' "$1")
  awk -v p="$hex" 'FNR > 1 && substr($2, length($2) - 4) == p && $4 == "0A" { found = 1 }
                   END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# Stop and disable the Prometheus server of Debian's package, whichever init started it.
stop_prometheus_service() {
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
  if [ -x /etc/init.d/prometheus ]; then
    /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
}

install_promtool() {
  if [ "$(id -u)" != 0 ]; then
    log "promtool not found and not root: install Debian's prometheus package (or set PROMTOOL)"
    exit 1
  fi
  log "installing Debian's prometheus package for promtool"
  # policy-rc.d answering 101 keeps maintainer scripts from starting the service (honoured
  # by invoke-rc.d and deb-systemd-invoke). Put one in place only if none exists, and
  # remove only the one put here.
  local policy=/usr/sbin/policy-rc.d ours=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# temporary, scripts/promtool.sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    ours=1
  fi
  local rc=0
  {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq &&
      apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  } || rc=$?
  if [ -n "$ours" ]; then rm -f "$policy"; fi
  [ "$rc" = 0 ] || { log "apt-get failed (exit $rc)"; exit "$rc"; }
  stop_prometheus_service
  for _ in 1 2 3 4 5 6 7 8 9 10; do listening_on 9090 || break; sleep 0.5; done
  if listening_on 9090; then
    log "something listens on 127.0.0.1:9090 after installing prometheus; stop it (systemctl stop prometheus / /etc/init.d/prometheus stop)"
    exit 1
  fi
  command -v promtool >/dev/null || { log "promtool still missing after install"; exit 1; }
}

PROMTOOL="${PROMTOOL:-}"
if [ -z "$PROMTOOL" ]; then
  command -v promtool >/dev/null || install_promtool
  PROMTOOL=promtool
fi
log "using $("$PROMTOOL" --version 2>&1 | head -n 1)"

echo "== promtool check rules deploy/prometheus/alerts.yml"
"$PROMTOOL" check rules deploy/prometheus/alerts.yml

echo "== promtool test rules deploy/prometheus/alerts_test.yml"
"$PROMTOOL" test rules deploy/prometheus/alerts_test.yml

echo "== promtool check config deploy/prometheus/prometheus.yml"
"$PROMTOOL" check config deploy/prometheus/prometheus.yml

echo "== dashboard JSON parses"
python3 -m json.tool deploy/grafana/dashboard.json >/dev/null

echo "== metric names, test coverage, runbook anchors"
python3 - <<'PY'
import json, re, sys
from pathlib import Path

errors = []

# The names the worker exports: `pub const X: &str = "outbox_...";` in src/metrics.rs.
exported = set(re.findall(r'pub const \w+: &str = "(outbox_\w+)";', Path("src/metrics.rs").read_text()))
if len(exported) < 10:
    errors.append(f"src/metrics.rs: found only {len(exported)} metric names; has its layout changed?")
histograms = {m for m in exported if m.endswith("_seconds")
              and m not in ("outbox_oldest_age_seconds", "outbox_db_oldest_xmin_age_seconds")}

def known(name):
    """A name a query may use: exported, or a histogram's _bucket/_sum/_count series."""
    if name in exported:
        return True
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return base != name and base in histograms

def names_in(expr):
    return set(re.findall(r"\b(outbox_[a-z0-9_]+)", expr))

# alerts.yml: rule names, expressions, runbook anchors. Parsed by pattern so no YAML library
# is needed; promtool has already validated the file's structure.
rules_text = Path("deploy/prometheus/alerts.yml").read_text()
alerts, exprs, anchors = [], {}, {}
current = None
lines = rules_text.splitlines()
for i, line in enumerate(lines):
    m = re.match(r"\s*- alert:\s*(\S+)", line)
    if m:
        current = m.group(1)
        alerts.append(current)
        exprs[current] = ""
        continue
    if current is None:
        continue
    m = re.match(r"(\s*)expr:\s*(.*)$", line)
    if m:
        indent, rest = len(m.group(1)), m.group(2)
        if rest.strip() in ("|", ">", "|-", ">-"):
            body = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                body.append(nxt)
            rest = "\n".join(body)
        exprs[current] = rest
    m = re.search(r'runbook_url:\s*"?docs/runbook\.md#([\w.-]+)"?', line)
    if m:
        anchors[current] = m.group(1)

if not alerts:
    errors.append("alerts.yml: no alerts found")
if len(set(alerts)) != len(alerts):
    errors.append("alerts.yml: duplicate alert names")
for a in alerts:
    used = names_in(exprs[a])
    if not used and "up{" not in exprs[a]:
        errors.append(f"alerts.yml: {a}: no metric found in expr")
    for n in sorted(used):
        if not known(n):
            errors.append(f"alerts.yml: {a} queries {n}, which src/metrics.rs does not export")
    if a not in anchors:
        errors.append(f"alerts.yml: {a} has no runbook_url docs/runbook.md#...")

# Runbook anchors: the slug GitHub gives a heading ("## 7.1 Engine unavailable" -> 71-engine-unavailable).
runbook = Path("docs/runbook.md")
if runbook.exists():
    def slug(h):
        h = h.strip().lower()
        h = re.sub(r"[^\w\- ]", "", h)
        return h.replace(" ", "-")
    slugs = {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", runbook.read_text(), re.M)}
    slugs |= set(re.findall(r'<a (?:name|id)="([^"]+)"', runbook.read_text()))
    for a, anchor in anchors.items():
        if anchor not in slugs:
            errors.append(f"alerts.yml: {a}: docs/runbook.md has no heading with anchor #{anchor}")
else:
    print("note: docs/runbook.md does not exist; runbook anchors not checked")

# alerts_test.yml: every alert has a test where it fires and one where it does not.
tests_text = Path("deploy/prometheus/alerts_test.yml").read_text()
firing, quiet = set(), set()
blocks = re.split(r"\n\s*- eval_time:", tests_text)
for b in blocks[1:]:
    m = re.search(r"^\s*alertname:\s*(\S+)", b, re.M)
    if not m:
        continue
    name = m.group(1)
    if re.search(r"exp_alerts:\s*\[\s*\]", b) or not re.search(r"exp_alerts:", b):
        quiet.add(name)
    else:
        firing.add(name)
for a in alerts:
    if a not in firing:
        errors.append(f"alerts_test.yml: no test where {a} fires")
    if a not in quiet:
        errors.append(f"alerts_test.yml: no test where {a} does not fire (exp_alerts: [])")
for name in (firing | quiet) - set(alerts):
    errors.append(f"alerts_test.yml: tests unknown alert {name}")

# dashboard.json: every exported metric is queried by some panel; every queried name exists.
dash = json.loads(Path("deploy/grafana/dashboard.json").read_text())
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
dash_exprs = [t.get("expr", "") for p in panels(dash.get("panels", [])) for t in p.get("targets", [])]
dash_exprs += [v.get("query", {}).get("query", "") if isinstance(v.get("query"), dict) else str(v.get("query", ""))
               for v in dash.get("templating", {}).get("list", [])]
queried = set().union(*(names_in(e) for e in dash_exprs)) if dash_exprs else set()
for n in sorted(exported):
    if n in histograms:
        ok = any(q in queried for q in (n + "_bucket", n + "_sum", n + "_count", n))
    else:
        ok = n in queried
    if not ok:
        errors.append(f"dashboard.json: no panel queries {n}")
for n in sorted(queried):
    if not known(n):
        errors.append(f"dashboard.json: a panel queries {n}, which src/metrics.rs does not export")
ids = [p.get("id") for p in panels(dash.get("panels", []))]
if len(ids) != len(set(ids)):
    errors.append("dashboard.json: duplicate panel ids")

if errors:
    print("\n".join("FAIL " + e for e in errors))
    sys.exit(1)
print(f"ok: {len(exported)} exported metrics all on the dashboard; {len(alerts)} alerts, "
      f"each with firing and not-firing tests and known metrics")
PY

echo "== YAML of compose and Grafana provisioning parses"
if python3 -c 'import yaml' 2>/dev/null; then
  python3 - <<'PY'
import yaml
for f in ("deploy/compose.yaml",
          "deploy/grafana/provisioning/datasources/prometheus.yml",
          "deploy/grafana/provisioning/dashboards/outbox.yml"):
    with open(f) as fh:
        yaml.safe_load(fh)
    print(f"ok: {f}")
PY
else
  echo "skipped: python3 has no yaml module"
fi

echo "promtool.sh: all checks passed"
