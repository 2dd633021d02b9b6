#!/usr/bin/env bash
# bench/cpu.sh — CPU instructions sluice spends per proxied request, counted by valgrind's
# callgrind: repeatable for the same binary and settings whatever else the machine is doing
# (wall-clock throughput on a shared 2-core machine is not). Every sluice thread is counted
# (workers, aggregator, store writer), so this is the whole cost of a request.
#
# Usage: bench/cpu.sh [--requests-for SECONDS] NAME=BINARY[:SETTINGS_EXTRA_FILE][+VAR=VALUE] ...
#   e.g. bench/cpu.sh before=/tmp/sluice-old after=target/release/sluice \
#        memory=target/release/sluice:bench/store-memory.toml
#   +VAR=VALUE sets one environment variable for that build, e.g. SLUICE_TEST_WITHOUT_STORE=1
#   for a build with the test-hooks feature (bench/store.sh uses it for its store-off baseline).
# For each NAME it starts the binary under callgrind in front of examples/mock_upstream, twice:
# each run first warms up (wrk for 2 s, so that start-up, the first store batch and its prepared
# statements, first connections and buffers are all behind it), then zeroes callgrind's counters;
# then one run stays idle and the other runs wrk for SECONDS (default 8); both then stop. It
# prints (instructions with traffic - instructions without) / requests answered in the window,
# and the average rows per batch of its SQLite store (under callgrind sluice answers far fewer requests
# per second than natively, so each batch's fixed cost is shared by fewer rows than in
# bench/run.sh: compare builds at similar rows per batch).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_UNDER_LOAD=8
if [[ ${1:-} == --requests-for ]]; then SECONDS_UNDER_LOAD=$2; shift 2; fi
[[ $# -gt 0 ]] || { sed -n 2,14p "$0"; exit 2; }
for tool in valgrind callgrind_control wrk curl; do
    command -v "$tool" >/dev/null || { echo "bench/cpu.sh: needs $tool (apt-get install $tool)" >&2; exit 1; }
done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-cpu.XXXXXX")
PIDS=()
# CPU_KEEP=1 keeps the callgrind outputs (for callgrind_annotate) and says where.
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
      if [[ -n ${CPU_KEEP:-} ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

MOCK_BIN=${MOCK_BIN:-}
if [[ -z $MOCK_BIN ]]; then
    (cd "$ROOT" && cargo build --release --quiet --example mock_upstream)
    MOCK_BIN=$ROOT/target/release/examples/mock_upstream
fi
MOCK_PORT=$(free_port)
"$MOCK_BIN" --listen "127.0.0.1:$MOCK_PORT" >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
cat >"$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}'
wrk.headers["content-type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = "sk-ant-api03-test-bench-0000000000000000"
LUA

# run NAME BINARY EXTRA ENV SECONDS → prints "instructions requests"
run() {
    local name=$1 bin=$2 extra=$3 envset=$4 secs=$5 port dir pid
    port=$(free_port)
    dir=$WORK/$name-$secs
    mkdir -p "$dir"
    {
        printf 'listen = "127.0.0.1:%s"\nworkers = 1\n' "$port"
        printf '[[routes]]\nprefix = "/anthropic"\nupstream = "http://127.0.0.1:%s"\n' "$MOCK_PORT"
        printf '[stats]\nstate_file = ""\n'
        [[ -n $extra ]] && cat "$extra"
    } >"$dir/sluice.toml"
    (cd "$dir" && exec env -u ANTHROPIC_API_KEY ${envset:+"$envset"} valgrind --tool=callgrind \
        --callgrind-out-file="$dir/callgrind.out" "$bin" --settings "$dir/sluice.toml") \
        >"$dir/sluice.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 200); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
    wrk -t1 -c4 -d2s -s "$WORK/post.lua" "http://127.0.0.1:$port/anthropic/v1/messages" >"$dir/warmup.txt"
    sleep 1
    callgrind_control -z "$pid" >/dev/null 2>&1
    local requests=0
    if [[ $secs != 0 ]]; then
        wrk -t1 -c4 -d"${secs}s" -s "$WORK/post.lua" "http://127.0.0.1:$port/anthropic/v1/messages" >"$dir/wrk.txt"
        requests=$(grep -o '[0-9]* requests in' "$dir/wrk.txt" | awk '{print $1}')
    fi
    sleep 1
    kill -TERM "$pid"
    wait "$pid" || true
    # A zeroed run dumps what came after the zeroing into callgrind.out.N (the last one counts).
    local out
    out=$(ls -t "$dir"/callgrind.out* | head -n 1)
    echo "$(awk '/^(summary|totals):/ {print $2; exit}' "$out") $requests $(rows_per_batch "$dir")"
}

# rows_per_batch DIR: rows ÷ batches in the run's SQLite store (— without one).
rows_per_batch() {
    python3 - "$1/state/sluice.db" <<'PY' 2>/dev/null || echo —
import sqlite3, sys, os
if not os.path.exists(sys.argv[1]):
    raise SystemExit(1)
db = sqlite3.connect(sys.argv[1])
rows = db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
batches = db.execute("SELECT COUNT(*) FROM store_batches").fetchone()[0]
print(rows // batches if batches else "—")
PY
}

printf '| build | instructions per request | requests counted | rows per store batch |\n|---|---:|---:|---:|\n'
for spec in "$@"; do
    name=${spec%%=*}
    rest=${spec#*=}
    envset=""
    if [[ $rest == *+* ]]; then
        envset=${rest#*+}
        rest=${rest%%+*}
    fi
    bin=${rest%%:*}
    extra=""
    [[ $rest == *:* ]] && extra=${rest#*:}
    read -r idle _ _ < <(run "$name" "$bin" "$extra" "$envset" 0)
    read -r busy requests batch_rows < <(run "$name" "$bin" "$extra" "$envset" "$SECONDS_UNDER_LOAD")
    printf '| %s | %s | %s | %s |\n' "$name" "$(( (busy - idle) / requests ))" "$requests" "$batch_rows"
done
