#!/usr/bin/env bash
# OpenTelemetry export end to end: the real sluice binary pushes to an OTLP/HTTP receiver that
# decodes with the OpenTelemetry project's own Python types (opentelemetry-proto from PyPI,
# pinned in scripts/otlp/requirements.txt), in front of the mock Anthropic upstream
# (scripts/e2e/mock_anthropic.py). A few requests (JSON, streamed, rate-limited, one with a
# client's traceparent and session), then sluice stops (its last export on the way out) and
# scripts/otlp/check.py compares what the receiver decoded with /stats: tokens by type, cost,
# request and duration counts, span attributes, the traceparent. Ends with "N passed, M failed".
#
# Everything listens on 127.0.0.1. Env: SLUICE_BIN=path to use a built binary as is.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
here=$root/scripts/otlp
deps=$here/.deps
work=$deps/run
export DEBIAN_FRONTEND=noninteractive

log() { printf '\n==> %s\n' "$*"; }
die() { echo "otlp-e2e: $*" >&2; exit 1; }

log "receiver's Python packages (venv in scripts/otlp/.deps/venv)"
command -v python3 >/dev/null || { apt-get update -qq; apt-get install -y -qq python3 >/dev/null; }
python3 -c 'import venv, ensurepip' 2>/dev/null \
  || { apt-get update -qq; apt-get install -y -qq --no-install-recommends python3-venv >/dev/null; }
mkdir -p "$deps"
[ -x "$deps/venv/bin/python" ] || python3 -m venv "$deps/venv"
"$deps/venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
py=$deps/venv/bin/python
"$py" -c 'from importlib.metadata import version as v; print("opentelemetry-proto", v("opentelemetry-proto"), "protobuf", v("protobuf"))'

log "sluice binary"
if [ -n "${SLUICE_BIN:-}" ]; then
  bin=$SLUICE_BIN
else
  cargo build --quiet
  bin=$root/target/debug/sluice
fi
[ -x "$bin" ] || die "no sluice binary at $bin"

rm -rf "$work"
mkdir -p "$work"
pids=()
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_for() { # FILE PATTERN SECONDS
  local deadline=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

log "mock upstream, receiver, sluice"
python3 "$root/scripts/e2e/mock_anthropic.py" >"$work/mock.port" 2>"$work/mock.log" &
pids+=($!)
"$py" "$here/receiver.py" >"$work/receiver.port" 2>"$work/receiver.log" &
pids+=($!)
wait_for "$work/mock.port" '^[0-9]' 10 || { cat "$work/mock.log" >&2; die "mock did not start"; }
wait_for "$work/receiver.port" '^[0-9]' 20 || { cat "$work/receiver.log" >&2; die "receiver did not start"; }
mock=http://127.0.0.1:$(head -1 "$work/mock.port")
receiver=http://127.0.0.1:$(head -1 "$work/receiver.port")

otel_key=otel-e2e-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
printf 'x-otel-e2e-key: %s\n' "$otel_key" >"$work/otlp-headers"
chmod 600 "$work/otlp-headers"
cat >"$work/sluice.toml" <<TOML
listen = "127.0.0.1:0"
shutdown_grace_s = 5
[[routes]]
prefix = "/anthropic"
upstream = "$mock"
server_key_env = "E2E_SERVER_KEY"
[stats]
state_file = ""
[store]
path = "$work/sluice.db"
[otlp]
endpoint = "$receiver"
headers_file = "otlp-headers"
interval_s = 1
traces = true
TOML
env -i PATH="$PATH" RUST_LOG=info E2E_SERVER_KEY=sk-ant-api03-test-otlp-e2e \
  "$bin" --settings "$work/sluice.toml" 2>"$work/sluice.log" &
sluice_pid=$!
pids+=($sluice_pid)
wait_for "$work/sluice.log" 'listening addr=' 30 || { cat "$work/sluice.log" >&2; die "sluice did not start"; }
addr=http://$(grep -o 'listening addr=127.0.0.1:[0-9]*' "$work/sluice.log" | head -1 | cut -d= -f2)
echo "mock $mock, receiver $receiver, sluice $addr"

trace_id=4bf92f3577b34da6a3ce929d0e0e4736
parent_id=00f067aa0ba902b7
session=8d1f3c2a-otlp-e2e-session
post() { # BODY [extra curl args]
  local body=$1; shift
  curl -s -o /dev/null -w '%{http_code}\n' -X POST "$addr/anthropic/v1/messages" \
    -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' "$@" --data "$body"
}
log "requests through sluice"
post '{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}' \
  -H "traceparent: 00-$trace_id-$parent_id-01" -H "x-claude-code-session-id: $session"
post '{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'
post '{"model":"claude-sonnet-4-5","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}'
post '{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"e2e:429"}]}'

log "/stats once the export has run"
deadline=$((SECONDS + 30))
until curl -s "$addr/stats" >"$work/stats.json" \
  && jq -e '.totals.requests == 4 and .otlp.exported >= 1' "$work/stats.json" >/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || { cat "$work/stats.json" >&2; die "/stats never showed 4 requests exported"; }
  sleep 0.2
done
jq -c '{totals: .totals | {requests, input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens, cost_usd}, otlp}' "$work/stats.json"

log "sluice stops (its last export on the way out)"
kill -TERM "$sluice_pid"
for _ in $(seq 1 100); do kill -0 "$sluice_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$sluice_pid" 2>/dev/null && die "sluice did not stop"
curl -s "$receiver/_received" >"$work/received.json"
if grep -q "$otel_key" "$work/sluice.log"; then die "the headers file's value reached the log"; fi

log "what the receiver decoded against /stats"
"$py" "$here/check.py" "$work/received.json" "$work/stats.json" \
  "$trace_id" "$parent_id" "$session" x-otel-e2e-key "$otel_key"
