#!/usr/bin/env bash
# The dashboard's browser test, for CI and by hand. Needs Debian's chromium (/usr/bin/chromium)
# and Playwright for Python (installed here with pip when missing; its own browsers are never
# downloaded). Screenshots go to $OUT (default target/dashboard).
#   scripts/dashboard/run.sh                                  # against the built-in stand-in
#   scripts/dashboard/run.sh --url http://127.0.0.1:4080 --token "$SLUICE_ADMIN_TOKEN"
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import playwright' 2>/dev/null; then
  "$PYTHON" -m pip install --quiet playwright
fi
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] || { echo "error: no chromium at $CHROMIUM (apt-get install chromium)" >&2; exit 1; }
exec "$PYTHON" scripts/dashboard/test_dashboard.py --chromium "$CHROMIUM" --out "${OUT:-target/dashboard}" "$@"
