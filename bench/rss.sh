#!/usr/bin/env bash
# bench/rss.sh — sluice's idle RSS as bench/run.sh measures it, and what it is made of, without
# the whole bench: a few seconds per binary, and not disturbed by other work on the machine.
#
# Usage: bench/rss.sh [NAME=]BINARY ...   e.g. bench/rss.sh before=/tmp/sluice-old after=target/release/sluice
# Environment: MOCK_BIN (default: target/release/examples/mock_upstream, built if missing).
#
# For each binary: the mock upstream and sluice started as bench/run.sh starts them (one worker,
# the default settings with the SQLite store, /anthropic and /openai/v1 routes to the mock, up
# once /healthz answers), then VmRSS one second later ("idle", bench/run.sh's figure), and again
# after one /healthz and one proxied POST /anthropic/v1/messages ("after one request"). Beside
# them: the executable's .text and .rodata (`size -A`), and from /proc/PID/smaps at the idle
# point the RSS of the executable's own pages, of shared libraries and of anonymous memory.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-rss.XXXXXX")
KEEP=0 SUCCESS=0 UPSTREAM_TLS=0
API_KEY="sk-ant-api03-test-bench-0000000000000000"
PIDS=()
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

[[ $# -gt 0 ]] || { sed -n 2,13p "$0"; exit 2; }
if [[ -z ${MOCK_BIN:-} ]]; then
    (cd "$ROOT" && cargo build --release --quiet --example mock_upstream) || die "building the mock failed"
    MOCK_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/mock_upstream
fi
start_mock

mb_of() { awk -v k="$1" 'BEGIN { printf "%.1f", k * 1024e-6 }'; }
# smaps_kb PID: "executable shared-libraries anonymous" resident kB.
smaps_kb() {
    local exe
    exe=$(readlink "/proc/$1/exe")
    awk -v exe="$exe" '
        /^[0-9a-f]+-[0-9a-f]+ / { path = (NF >= 6) ? $6 : ""; next }
        /^Rss:/ {
            if (path == exe) e += $2
            else if (path ~ /^\//) l += $2
            else a += $2
        }
        END { print e + 0, l + 0, a + 0 }' "/proc/$1/smaps"
}

printf '| build | .text | .rodata | RSS idle | executable | shared libraries | anonymous | RSS after one request |\n'
printf '|---|---:|---:|---:|---:|---:|---:|---:|\n'
for spec in "$@"; do
    name=${spec%%=*} bin=${spec#*=}
    [[ $spec == *=* ]] || name=$(basename "$bin")
    [[ -x $bin ]] || die "not an executable: $bin"
    SLUICE_BIN=$(readlink -f "$bin")
    dir=$WORK/$name
    mkdir -p "$dir"
    port=$(free_port)
    launch_sluice "$name" "$dir" "$port" "upstream = \"http://127.0.0.1:$MOCK_PORT\"

[[routes]]
prefix = \"/openai/v1\"
protocol = \"openai\"
upstream = \"http://127.0.0.1:$MOCK_PORT/v1\""
    pid=$LAUNCHED_PID
    sleep 1
    idle=$(rss_kb "$pid")
    read -r exe libs anon < <(smaps_kb "$pid")
    curl -fsS --max-time 5 -o /dev/null "http://127.0.0.1:$port/healthz"
    curl -fsS --max-time 5 -o /dev/null "http://127.0.0.1:$port/anthropic/v1/messages" \
        -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' \
        -H "x-api-key: $API_KEY" \
        -d '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}'
    sleep 1
    after=$(rss_kb "$pid")
    kill "$pid"
    read -r text rodata < <(size -A "$SLUICE_BIN" | awk '$1 == ".text" { t = $2 } $1 == ".rodata" { r = $2 } END { print t, r }')
    printf '| %s | %s MB | %s MB | %s MB | %s MB | %s MB | %s MB | %s MB |\n' "$name" \
        "$(awk -v b="$text" 'BEGIN { printf "%.1f", b / 1e6 }')" "$(awk -v b="$rodata" 'BEGIN { printf "%.1f", b / 1e6 }')" \
        "$(mb_of "$idle")" "$(mb_of "$exe")" "$(mb_of "$libs")" "$(mb_of "$anon")" "$(mb_of "$after")"
done
SUCCESS=1
