#!/usr/bin/env bash
# The dashboard's browser test, for CI and by hand. Needs Debian's chromium (/usr/bin/chromium)
# and Playwright for Python (installed here with pip when missing; its own browsers are never
# downloaded). Screenshots go to $OUT (default target/dashboard).
#   scripts/dashboard/run.sh              # the real sluice over a store filled with known rows
#   scripts/dashboard/run.sh --stand-in   # the page alone, against fake_sluice.py
#
# The real run builds sluice and examples/fill_store, fills a new SQLite store in a temporary
# directory, starts sluice on 127.0.0.1 with that store, an admin token and a quota, sends two
# Claude logins through it to a mock upstream that answers with subscription rate-limit headers
# (probe.py), starts a second sluice with an empty store for the empty state, and checks the page
# against the sums of the filler's and the probe's rows.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import playwright' 2>/dev/null; then
  "$PYTHON" -m pip install --quiet playwright
fi
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
[ -x "$CHROMIUM" ] || { echo "error: no chromium at $CHROMIUM (apt-get install chromium)" >&2; exit 1; }
OUT="${OUT:-target/dashboard}"
TEST=(scripts/dashboard/test_dashboard.py --chromium "$CHROMIUM" --out "$OUT")

if [ "${1:-}" = "--stand-in" ]; then
  exec "$PYTHON" "${TEST[@]}"
fi

cargo build --quiet --bin sluice --example fill_store
TARGET="${CARGO_TARGET_DIR:-target}/debug"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

"$TARGET/examples/fill_store" --db "$WORK/full/sluice.db" --known "$WORK/known.json" > "$WORK/fill.json"
echo "filled: $(cat "$WORK/fill.json")"

free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME PORT TOKEN UPSTREAM_PORT: a sluice whose store and state file live in $WORK/NAME.
start() {
  local dir="$WORK/$1" port="$2" token="$3" upstream="$4"
  mkdir -p "$dir"
  cat > "$dir/sluice.toml" <<EOF
listen = "127.0.0.1:$port"
workers = 1

[[routes]]
prefix = "/anthropic"
upstream = "http://127.0.0.1:$upstream"

[admin]
token_env = "DASHBOARD_TEST_ADMIN_TOKEN"

[stats]
state_file = "$dir/stats.json"

[store]
path = "$dir/sluice.db"
EOF
  if [ "$1" = full ]; then
    printf '\n[[quotas]]\nname = "team-daily"\ncaller = "*"\nwindow = "day"\nmax_usd = 250.0\n' >> "$dir/sluice.toml"
  fi
  DASHBOARD_TEST_ADMIN_TOKEN="$token" "$TARGET/sluice" --settings "$dir/sluice.toml" > "$dir/log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 100); do
    if "$PYTHON" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz')" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "error: sluice ($1) did not start:" >&2
  cat "$dir/log" >&2
  exit 1
}

TOKEN="dashboard-test-$RANDOM$RANDOM"
PORT="$(free_port)"
UPSTREAM_PORT="$(free_port)"
start full "$PORT" "$TOKEN" "$UPSTREAM_PORT"
# Subscription state from real answers: a mock upstream answers two Claude logins through sluice.
"$PYTHON" scripts/dashboard/probe.py --listen "$UPSTREAM_PORT" --sluice "http://127.0.0.1:$PORT" \
  --token "$TOKEN" --known "$WORK/known.json"
# Nothing listens on port 9: no request goes through the empty one.
EMPTY_PORT="$(free_port)"
start empty "$EMPTY_PORT" "" 9

status=0
"$PYTHON" "${TEST[@]}" --url "http://127.0.0.1:$PORT" --token "$TOKEN" --known "$WORK/known.json" \
  --empty-url "http://127.0.0.1:$EMPTY_PORT" "$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- sluice log (filled store)" >&2
  tail -n 40 "$WORK/full/log" >&2
fi
exit "$status"
