#!/usr/bin/env bash
# bench/store.sh — the store's speed on release builds, as markdown tables for docs/performance.md.
#
# Usage: bench/store.sh [--rows N] [--hostile N] [--runs N] [--pg URL | --pg-temp]
#                       [--rate R] [--fleet-seconds S] [--no-fleet] [--cpu-seconds S] [--no-cpu]
#
# 1. examples/store_bench (release): fills an SQLite store in a temporary directory (and, with
#    --pg, the PostgreSQL database at URL) with N rows of team traffic over 30 days (default
#    1,000,000) through the store's own writer (rows/s the writer sustains), then times /usage
#    and the store part of /stats (median of --runs), then adds a burst of hostile requests
#    (default 100,000, each with a new model, credential and session) and times /stats over
#    them. Single-process timings. --pg-temp starts a throwaway PostgreSQL for the run
#    (scripts/pg-test-server.sh: a local server with fsync off, so an upper bound).
# 2. Fleet (unless --no-fleet): K stores write to one database at once, as K sluices would, each
#    fed R rows/s (default 30,000: about what one sluice answers in bench/run.sh) by a load
#    generator of its own for S seconds (default 20); K = 1, 2, 3, 4, 6, 8, ... until rows are
#    dropped or a backlog of more than a second's rows is left. On PostgreSQL when given (how
#    many sluices at the bench's load one PostgreSQL serves), else one SQLite instance. The
#    generators share this machine's CPUs with the database: a bigger machine serves more.
# 3. CPU per request (unless --no-cpu): one release build of sluice with the test-hooks feature,
#    run under bench/cpu.sh (callgrind: instructions, not wall-clock, so a busy machine does not
#    spoil it) three ways: `off`, without a store (SLUICE_TEST_WITHOUT_STORE=1: the store sink is
#    not registered at all); `memory`, the in-memory store (`[store] path = ""`); `sqlite`, an
#    SQLite file (the default). With a CPU-bound proxy, throughput goes as 1 / instructions per
#    request, so "off ÷ SQLite" is the throughput the SQLite store keeps.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROWS=1000000 HOSTILE=100000 RUNS=5 PG="" PG_TEMP=0 CPU_SECONDS=6 CPU=1
RATE=30000 FLEET_SECONDS=20 FLEET=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --rows) ROWS=$2; shift 2 ;;
        --hostile) HOSTILE=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --pg) PG=$2; shift 2 ;;
        --pg-temp) PG_TEMP=1; shift ;;
        --rate) RATE=$2; shift 2 ;;
        --fleet-seconds) FLEET_SECONDS=$2; shift 2 ;;
        --no-fleet) FLEET=0; shift ;;
        --cpu-seconds) CPU_SECONDS=$2; shift 2 ;;
        --no-cpu) CPU=0; shift ;;
        *) sed -n 2,27p "$0"; exit 2 ;;
    esac
done
cd "$ROOT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-store-bench.XXXXXX")
cleanup() {
    if [[ $PG_TEMP == 1 && -n $PG ]]; then scripts/pg-test-server.sh stop "$PG"; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
if [[ $PG_TEMP == 1 ]]; then
    # The throwaway server takes a random port: another try when it was taken.
    for _ in 1 2 3; do PG=$(scripts/pg-test-server.sh start) && break; done
    [[ -n $PG ]] || { echo "bench/store.sh: the throwaway PostgreSQL did not start" >&2; exit 1; }
fi

cargo build --release --quiet --example store_bench
BENCH=target/release/examples/store_bench
backends=(sqlite)
[[ -n $PG ]] && backends+=(postgresql)
for backend in "${backends[@]}"; do
    args=(--rows "$ROWS" --hostile "$HOSTILE" --runs "$RUNS")
    [[ $backend == postgresql ]] && args+=(--pg "$PG")
    echo "## store ($backend): $ROWS rows of team traffic, then $HOSTILE hostile keys ($(git rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%M:%SZ))"
    echo
    "$BENCH" "${args[@]}" >"$WORK/store-$backend.txt"
    sed -n '/^| measure/,$p' "$WORK/store-$backend.txt"
    echo
done

if [[ $FLEET == 1 ]]; then
    fleet_backend=sqlite fleet_args=()
    [[ -n $PG ]] && fleet_backend=postgresql fleet_args=(--pg "$PG")
    echo "## fleet ($fleet_backend): K instances writing at once, $RATE rows/s each, $FLEET_SECONDS s"
    echo
    echo "| instances | rows/s offered | rows written | rows written ÷ seconds of load | dropped | backlog at the end | served |"
    echo "|---:|---:|---:|---:|---:|---:|---|"
    served=0
    for k in 1 2 3 4 6 8 12 16 24 32; do
        line=$("$BENCH" --instances "$k" --rate "$RATE" --seconds "$FLEET_SECONDS" ${fleet_args[@]+"${fleet_args[@]}"})
        read -r written dropped backlog per_s ok < <(awk '{ print $6, $8, $10, $12, $14 }' <<<"$line")
        echo "| $k | $((k * RATE)) | $written | $per_s | $dropped | $backlog | $ok |"
        [[ $ok == yes ]] || break
        served=$k
        if [[ $fleet_backend == sqlite ]]; then break; fi
    done
    echo
    echo "One $fleet_backend database served $served instance(s) at $RATE rows/s each without dropping a row."
    echo
fi

[[ $CPU == 1 ]] || exit 0
# Built aside, so that target/release/sluice stays the production build.
cargo build --release --quiet --features test-hooks --bin sluice
cp target/release/sluice "$WORK/sluice-hooks"
cargo build --release --quiet --bin sluice
echo
echo "## CPU per request (bench/cpu.sh --requests-for $CPU_SECONDS, POST /v1/messages, one worker)"
echo
bash bench/cpu.sh --requests-for "$CPU_SECONDS" \
    "off=$WORK/sluice-hooks+SLUICE_TEST_WITHOUT_STORE=1" \
    "memory=$WORK/sluice-hooks:bench/store-memory.toml" \
    "sqlite=$WORK/sluice-hooks" | tee "$WORK/cpu.md"
off=$(awk -F'|' '$2 ~ /^ off / {gsub(/ /, "", $3); print $3}' "$WORK/cpu.md")
sqlite=$(awk -F'|' '$2 ~ /^ sqlite / {gsub(/ /, "", $3); print $3}' "$WORK/cpu.md")
echo
echo "The SQLite store costs $((sqlite - off)) instructions per request; throughput with it, as a"
echo "share of the same build without a store: $(awk -v a="$off" -v b="$sqlite" 'BEGIN { printf "%.3f", a / b }')× (target ≥ 0.95×)."
