#!/usr/bin/env bash
# bench/stack.sh — how much of sluice's gap to nginx is the HTTP stack's own.
#
# The throughput run of bench/run.sh (wrk POSTs /v1/messages, small JSON answer, one worker
# each, the server under test pinned alone to one core), with five more targets beside nginx and
# sluice. Three are examples/bare_proxy.rs on sluice's stack (actix-web server + awc client), on
# actix-web with hyper-util's pooled client, and on hyper's (hyper server + hyper-util client),
# each doing nothing but forward the request and stream the answer back. Two are the actix-web +
# awc one again with what SPEC asks of every request: `--store`, its row in the store (sluice's
# own store writer, schema and batching, into an SQLite file), and `--store --meter`, also its
# model and usage read with sluice's readers, priced, one usage line logged: the floor under a
# sluice on this stack. Besides requests/s and latency it reports each server's CPU time per
# request (user + system, from /proc), which is what bounds one core's throughput.
# It prints a markdown report and writes it to bench/results-stack.md.
#
# Usage: bench/stack.sh [--quick] [--out FILE] [--keep]
# Environment: SLUICE_BIN, MOCK_BIN, BARE_BIN (use these binaries instead of building them),
#   BENCH_TARGETS (subset of "nginx sluice actix-awc actix-awc-store actix-awc-meter actix-hyper hyper"), SUT_CPU, HARNESS_CPU,
#   BEFORE_BIN (another sluice binary, e.g. an earlier commit's, measured as one more target
#   "sluice-before" in the same rounds: a before/after comparison from one run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-stack.XXXXXX")
OUT="$ROOT/bench/results-stack.md"
QUICK=0
KEEP=0
TARGETS=${BENCH_TARGETS:-nginx sluice actix-awc actix-awc-store actix-awc-meter actix-hyper hyper}
[[ -z ${BEFORE_BIN:-} ]] || TARGETS="${TARGETS/sluice/sluice-before sluice}"
SUT_CPU=${SUT_CPU:-0}
HARNESS_CPU=${HARNESS_CPU:-1}
API_KEY="sk-ant-api03-test-bench-0000000000000000"
CONNECTIONS=32
PIDS=()
SUCCESS=0
UPSTREAM_TLS=0 COUNT_UPSTREAM=0 MACHINE_BUSY=0

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

pid_of() {
    case $1 in
        nginx) echo "$NGINX_PID" ;; sluice) echo "$SLUICE_PID" ;; sluice-before) echo "$BEFORE_PID" ;;
        actix-awc) echo "$ACTIX_PID" ;; actix-awc-store) echo "$STORED_PID" ;; actix-awc-meter) echo "$METERED_PID" ;;
        actix-hyper) echo "$MIXED_PID" ;; hyper) echo "$HYPER_PID" ;;
    esac
}

url_of() {
    case $1 in
        nginx) echo "http://127.0.0.1:$NGINX_PORT/v1/messages" ;;
        sluice) echo "http://127.0.0.1:$SLUICE_PORT/anthropic/v1/messages" ;;
        sluice-before) echo "http://127.0.0.1:$BEFORE_PORT/anthropic/v1/messages" ;;
        actix-awc) echo "http://127.0.0.1:$ACTIX_PORT/v1/messages" ;;
        actix-awc-store) echo "http://127.0.0.1:$STORED_PORT/v1/messages" ;;
        actix-awc-meter) echo "http://127.0.0.1:$METERED_PORT/v1/messages" ;;
        actix-hyper) echo "http://127.0.0.1:$MIXED_PORT/v1/messages" ;;
        hyper) echo "http://127.0.0.1:$HYPER_PORT/v1/messages" ;;
    esac
}

# The server under test alone on SUT_CPU; the mock, wrk and the other servers on HARNESS_CPU.
arrange_cpus() {
    local target
    pin "$MOCK_PID" "$HARNESS_CPU"
    for target in $TARGETS; do pin "$(pid_of "$target")" "$HARNESS_CPU"; done
    pin "$(pid_of "$1")" "$SUT_CPU"
}

start_bare() { # STACK [ARGS...]: its pid and port in BARE_PID and BARE_PORT
    local stack=$1
    shift
    BARE_PORT=$(free_port)
    "$BARE_BIN" --stack "$stack" --listen "127.0.0.1:$BARE_PORT" --upstream "http://127.0.0.1:$MOCK_PORT" \
        "$@" >"$WORK/bare-$stack-$BARE_PORT.log" 2>&1 &
    BARE_PID=$!
    PIDS+=("$BARE_PID")
    wait_up "bare proxy ($stack $*)" "$BARE_PID" "$WORK/bare-$stack-$BARE_PORT.log" -X POST -d '{}' \
        "http://127.0.0.1:$BARE_PORT/v1/messages"
    log "bare proxy on $stack's stack $* on 127.0.0.1:$BARE_PORT (pid $BARE_PID)"
}

# cpu_seconds PID: user + system CPU time of PID and its children (nginx's worker), in seconds.
cpu_seconds() {
    local pid total=0
    for pid in "$1" $(children_of "$1"); do
        total=$((total + $(awk '{ print $14 + $15 }' /proc/"$pid"/stat)))
    done
    awk -v t="$total" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", t / hz }'
}

measure() {
    local round target line cpu_before cpu_after
    mkdir -p "$WORK/tp"
    for round in $(seq 1 "$ROUNDS"); do
        for target in $TARGETS; do
            arrange_cpus "$target"
            wrk_once "$target" "$WARMUP" >/dev/null
            cpu_before=$(cpu_seconds "$(pid_of "$target")")
            line=$(wrk_once "$target" "$DURATION")
            cpu_after=$(cpu_seconds "$(pid_of "$target")")
            # CPU µs per request: the server's CPU time over the requests wrk counted.
            line+=" $(awk -v b="$cpu_before" -v a="$cpu_after" -v r="$(awk '{ print $1 }' <<<"$line")" \
                -v d="$DURATION" 'BEGIN { printf "%.1f", (a - b) * 1e6 / (r * d) }')"
            echo "$line" >>"$WORK/tp/$target"
            log "round $round/$ROUNDS $target: $(awk '{ printf "%.0f req/s, p50 %d µs, p99 %d µs, errors %d+%d, %.1f µs CPU per request", $1, $2, $3, $4, $5, $6 }' <<<"$line")"
        done
    done
}

tp() { awk -v c="$2" '{ print $c }' "$WORK/tp/$1" | median; }

report() {
    local target label nginx_rps nginx_cpu
    nginx_rps=$(tp nginx 1)
    nginx_cpu=$(tp nginx 6)
    echo "## What the HTTP stack costs (bench/stack.sh)"
    echo
    echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
    echo "- tools: $("$NGINX" -v 2>&1 | sed 's/nginx version: //'), $(wrk -v 2>&1 | head -n 1 | awk '{ print "wrk", $2 }'), sluice $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '(uncommitted)')"
    echo "- method: as bench/run.sh's throughput run (one worker each, server under test pinned alone to CPU $SUT_CPU, wrk with 1 thread and $CONNECTIONS connections and the mock on CPU $HARNESS_CPU), $ROUNDS rounds × ${DURATION} s alternating targets, median shown; machine ${MACHINE_BUSY}% busy before the run"
    echo
    echo "| | requests/s | ÷ nginx | p50 | p99 | p99 ÷ nginx | CPU per request | errors |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for target in $TARGETS; do
        case $target in
            nginx) label="nginx (proxy_pass, upstream keepalive)" ;;
            sluice) label="sluice (store on, default settings)" ;;
            sluice-before) label="sluice before ($BEFORE_LABEL, same settings)" ;;
            actix-awc) label="bare proxy, actix-web + awc (sluice's stack)" ;;
            actix-awc-store) label="bare proxy, actix-web + awc + a store row per request (sluice's writer, SQLite; $(stored_rows store))" ;;
            actix-awc-meter) label="bare proxy, actix-web + awc + store row, model and usage read, priced, usage line logged ($(stored_rows meter))" ;;
            actix-hyper) label="bare proxy, actix-web + hyper-util client" ;;
            hyper) label="bare proxy, hyper + hyper-util client" ;;
        esac
        printf '| %s | %s | %s | %s | %s | %s | %s µs | %s |\n' "$label" "$(count "$(tp "$target" 1)")" \
            "$(ratio "$(tp "$target" 1)" "$nginx_rps")" "$(ms "$(tp "$target" 2)")" "$(ms "$(tp "$target" 3)")" \
            "$(ratio "$(tp "$target" 3)" "$(tp nginx 3)")" "$(fmt "%.1f" 1 "$(tp "$target" 6)")" \
            "$(awk '{ s += $4 + $5 } END { print s + 0 }' "$WORK/tp/$target")"
    done
    echo
    echo "CPU per request is the server's user + system time during the measured rounds over the"
    echo "requests wrk completed (nginx: $(fmt "%.1f" 1 "$nginx_cpu") µs); with one core saturated it is what bounds requests/s."
}

# stored_rows NAME: how many rows a bare proxy's store holds at report time (warm-ups and rounds
# together; rows its writer has not committed yet are not counted).
stored_rows() {
    local rows
    rows=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM requests").fetchone()[0])' \
        "$WORK/bare-$1.db" 2>/dev/null || echo "?")
    echo "$rows rows stored at report time"
}

main() {
    parse_options "$@"
    if ((QUICK)); then ROUNDS=2 DURATION=3 WARMUP=1; else ROUNDS=3 DURATION=10 WARMUP=2; fi
    install_tools
    decide_pinning
    if [[ -z ${BARE_BIN:-} ]]; then
        log "building the bare proxy (release)"
        (cd "$ROOT" && cargo build --release --quiet --example bare_proxy) || die "building bare_proxy failed"
        BARE_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/bare_proxy
    fi
    build
    check_quiet
    start_mock
    has_target nginx && { start_nginx; }
    if has_target sluice; then
        SLUICE_PORT=$(free_port)
        launch_sluice sluice "$WORK" "$SLUICE_PORT" "upstream = \"http://127.0.0.1:$MOCK_PORT\""
        SLUICE_PID=$LAUNCHED_PID
    fi
    if [[ -n ${BEFORE_BIN:-} ]]; then
        BEFORE_PORT=$(free_port)
        BEFORE_LABEL=${BEFORE_LABEL:-$(basename "$BEFORE_BIN")}
        mkdir -p "$WORK/before"
        SLUICE_BIN=$BEFORE_BIN launch_sluice sluice-before "$WORK/before" "$BEFORE_PORT" \
            "upstream = \"http://127.0.0.1:$MOCK_PORT\""
        BEFORE_PID=$LAUNCHED_PID
    fi
    if has_target actix-awc; then start_bare actix; ACTIX_PID=$BARE_PID ACTIX_PORT=$BARE_PORT; fi
    if has_target actix-awc-store; then
        start_bare actix --store "$WORK/bare-store.db"
        STORED_PID=$BARE_PID STORED_PORT=$BARE_PORT
    fi
    if has_target actix-awc-meter; then
        start_bare actix --store "$WORK/bare-meter.db" --meter
        METERED_PID=$BARE_PID METERED_PORT=$BARE_PORT
    fi
    if has_target actix-hyper; then start_bare actix-hyper; MIXED_PID=$BARE_PID MIXED_PORT=$BARE_PORT; fi
    if has_target hyper; then start_bare hyper; HYPER_PID=$BARE_PID HYPER_PORT=$BARE_PORT; fi
    write_wrk_script
    measure
    report | tee "$OUT"
    SUCCESS=1
}

main "$@"
