#!/usr/bin/env bash
# A one-minute trial with no API key: starts sluice in front of a local mock of the Anthropic
# API (examples/mock_upstream.rs), sends a few requests through it (plain and streamed), and
# shows what sluice counted in /stats. With --keep, both stay up until Ctrl-C so you can open
# the dashboard and send your own requests.
#
#   scripts/demo.sh            # run, print the counts, stop
#   scripts/demo.sh --keep     # …and keep running: http://127.0.0.1:4090/dashboard
#
# DEMO_PORT (4090) and DEMO_MOCK_PORT (9001) move the ports; DEMO_PROFILE=dev uses a debug build.
set -euo pipefail
cd "$(dirname "$0")/.."

keep=false
[ "${1:-}" = "--keep" ] && keep=true
port=${DEMO_PORT:-4090}
mock_port=${DEMO_MOCK_PORT:-9001}
profile=${DEMO_PROFILE:-release}
dir=$([ "$profile" = dev ] && echo debug || echo release)

echo "==> building sluice and the mock API ($profile)"
cargo build --quiet --profile "$profile" --bin sluice --example mock_upstream

tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

cat > "$tmp/sluice.toml" <<TOML
listen = "127.0.0.1:$port"

[[routes]]
prefix = "/anthropic"
upstream = "http://127.0.0.1:$mock_port"   # the mock, instead of https://api.anthropic.com

[stats]
state_file = ""

[store]
path = ""                                  # the demo keeps nothing once stopped
TOML

"target/$dir/examples/mock_upstream" --listen "127.0.0.1:$mock_port" >"$tmp/mock.log" 2>&1 &
pids+=($!)
"target/$dir/sluice" --settings "$tmp/sluice.toml" 2>"$tmp/sluice.log" &
pids+=($!)

for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { cat "$tmp/sluice.log"; exit 1; }
echo "==> sluice on http://127.0.0.1:$port, forwarding /anthropic to the mock on :$mock_port"

echo "==> 5 requests with a (fake) key of your own, 3 streamed ones with another"
for i in 1 2 3 4 5; do
  curl -s "http://127.0.0.1:$port/anthropic/v1/messages" \
    -H "x-api-key: sk-ant-api03-demo-alice" -H "anthropic-version: 2023-06-01" \
    -H "content-type: application/json" \
    -d '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}' \
    >/dev/null
done
for i in 1 2 3; do
  curl -sN "http://127.0.0.1:$port/anthropic/v1/messages" \
    -H "x-api-key: sk-ant-api03-demo-bob" -H "anthropic-version: 2023-06-01" \
    -H "x-mock-events: 5" -H "x-mock-interval-ms: 20" -H "content-type: application/json" \
    -d '{"model":"claude-sonnet-4-5","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"hi"}]}' \
    >/dev/null
done
sleep 0.5

echo "==> what sluice counted (GET /stats)"
stats=$(curl -s "http://127.0.0.1:$port/stats")
if command -v jq >/dev/null; then
  echo "$stats" | jq '{requests: .totals.requests, input_tokens: .totals.input_tokens,
    output_tokens: .totals.output_tokens, cost_usd: .totals.cost_usd,
    by_credential: (.by_credential | map_values(.requests))}'
else
  echo "$stats"
fi
requests=$(echo "$stats" | grep -o '"requests":[0-9]*' | head -1 | cut -d: -f2)
[ "$requests" = 8 ] || { echo "expected 8 requests, /stats says ${requests:-nothing}" >&2; exit 1; }

if $keep; then
  echo "==> dashboard: http://127.0.0.1:$port/dashboard   (Ctrl-C stops sluice and the mock)"
  wait "${pids[1]}"
fi
