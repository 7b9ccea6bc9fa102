#!/usr/bin/env bash
# The browser tests' Python: a venv at target/venv with Playwright from PyPI (pinned). The
# browser itself is Debian's chromium (scripts/deps.sh); Playwright's own browser download
# is never used, so `playwright install` is not run. Prints the venv's python.
# Idempotent and quick once the venv holds the pinned version.
#
#   scripts/browser-venv.sh        # -> target/venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."

PLAYWRIGHT_VERSION=1.65.2
venv="${OUTBOX_BROWSER_VENV:-$PWD/target/venv}"
py="$venv/bin/python"

if ! "$py" -c "import importlib.metadata as m, sys; sys.exit(m.version('playwright') != '$PLAYWRIGHT_VERSION')" 2>/dev/null; then
  echo "browser-venv: installing playwright==$PLAYWRIGHT_VERSION into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "playwright==$PLAYWRIGHT_VERSION" >&2
fi
echo "$py"
