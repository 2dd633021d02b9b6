#!/usr/bin/env bash
# bench/store.sh — the store's speed on release builds, as markdown tables for docs/performance.md.
#
# Usage: bench/store.sh [--rows N] [--hostile N] [--runs N] [--pg URL] [--cpu-seconds S] [--no-cpu]
#
# 1. examples/store_bench (release): fills an SQLite store in a temporary directory (or the
#    PostgreSQL database at URL) with N rows of team traffic over 30 days (default 1,000,000)
#    through the store's own writer, then times /usage and the store part of /stats (median of
#    --runs), then adds a burst of hostile requests (default 100,000, each with a new model,
#    credential and session) and times /stats over them. Single-process timings.
# 2. CPU per request (unless --no-cpu): one release build of sluice with the test-hooks feature,
#    run under bench/cpu.sh (callgrind: instructions, not wall-clock, so a busy machine does not
#    spoil it) three ways: `off`, without a store (SLUICE_TEST_WITHOUT_STORE=1: the store sink is
#    not registered at all); `memory`, the in-memory store (`[store] path = ""`); `sqlite`, an
#    SQLite file (the default). With a CPU-bound proxy, throughput goes as 1 / instructions per request, so
#    "off ÷ SQLite" is the throughput the SQLite store keeps.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROWS=1000000 HOSTILE=100000 RUNS=5 PG="" CPU_SECONDS=6 CPU=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --rows) ROWS=$2; shift 2 ;;
        --hostile) HOSTILE=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --pg) PG=$2; shift 2 ;;
        --cpu-seconds) CPU_SECONDS=$2; shift 2 ;;
        --no-cpu) CPU=0; shift ;;
        *) sed -n 2,16p "$0"; exit 2 ;;
    esac
done
cd "$ROOT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-store-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

cargo build --release --quiet --example store_bench
args=(--rows "$ROWS" --hostile "$HOSTILE" --runs "$RUNS")
[[ -n $PG ]] && args+=(--pg "$PG")
echo "## store: $ROWS rows of team traffic, then $HOSTILE hostile keys ($(git rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%M:%SZ))"
echo
target/release/examples/store_bench "${args[@]}" >"$WORK/store.txt"
sed -n '/^| measure/,$p' "$WORK/store.txt"

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
