#!/usr/bin/env bash
# bench/streams-h2.sh — memory per concurrent SSE stream with an HTTP/2 upstream.
#
# The mock upstream (examples/mock_upstream.rs) serves HTTPS (h2 and http/1.1 by ALPN, with a
# CA made for the run); one sluice (one worker, routes.http2 = true, the SQLite store on) sits
# in front of it, and examples/stream_load.rs holds N concurrent slow SSE streams through it
# (each its own HTTP/1.1 connection to sluice; upstream they share HTTP/2 connections). Measured:
# sluice's RSS idle and at its peak during the streams, the most connections it held open to the
# upstream at once, and how many streams completed. RSS is not distorted much by other load on
# the machine, so this may run on a busy one (the event latencies it also prints are).
#
# Usage: bench/streams-h2.sh [--quick] [--out FILE] [--keep] [--streams N]
#   --streams N  concurrent streams (default 10000; --quick: 1000)
#   --quick      short streams (5 events 200 ms apart) to check that everything works
#   --out FILE   also write the report to FILE
#   --keep       keep the temporary directory (logs, stream reports) afterwards
# Environment: SLUICE_BIN, MOCK_BIN, LOAD_BIN, SUT_CPU, HARNESS_CPU as for bench/run.sh.
#
# N streams need about N + 100 open files in sluice and N in stream_load: the count is capped to
# fit the open-files hard limit (`ulimit -Hn`), and the report says so.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench-h2.XXXXXX")
OUT=""
QUICK=0
KEEP=0
TARGETS="sluice"
SUT_CPU=${SUT_CPU:-0}
HARNESS_CPU=${HARNESS_CPU:-1}
API_KEY="sk-ant-api03-test-bench-0000000000000000"
CONNECTIONS=32
PIDS=()
SUCCESS=0
MACHINE_BUSY=0
UPSTREAM_TLS=1 COUNT_UPSTREAM=1
STREAM_COUNT=""

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

pid_of() { echo "$SLUICE_PID"; }
url_of() { echo "http://127.0.0.1:$SLUICE_PORT/anthropic/v1/messages"; }
arrange_cpus() {
    pin "$MOCK_PID" "$HARNESS_CPU"
    if [[ $1 == none ]]; then pin "$SLUICE_PID" "$HARNESS_CPU"; else pin "$SLUICE_PID" "$SUT_CPU"; fi
}

main() {
    local args=()
    while (($#)); do
        case $1 in
            --streams) STREAM_COUNT=$2; shift ;;
            *) args+=("$1") ;;
        esac
        shift
    done
    parse_options ${args[@]+"${args[@]}"}
    # streams: count events interval_ms ramp_ms
    if ((QUICK)); then
        STREAMS=("${STREAM_COUNT:-1000}" 5 200 1000)
    else
        STREAMS=("${STREAM_COUNT:-10000}" 20 1000 5000)
    fi
    local tool
    for tool in curl jq taskset; do
        command -v "$tool" >/dev/null || die "needs $tool (apt-get install curl jq util-linux)"
    done
    TARGETS=sluice  # build: sluice and the examples only
    command -v openssl >/dev/null || die "openssl is needed for the test CA"
    command -v ss >/dev/null || die "ss (iproute2) is needed to count upstream connections"
    build
    raise_fd_limit
    local wanted=${STREAMS[0]} fit=$((FD_LIMIT - 256))
    if ((fit < wanted)); then
        log "open-files hard limit is $FD_LIMIT: running $fit streams instead of $wanted"
        STREAMS[0]=$fit
    fi
    decide_pinning
    check_quiet
    make_test_ca
    start_mock
    SLUICE_PORT=$(free_port)
    launch_sluice sluice "$WORK" "$SLUICE_PORT" "upstream = \"$MOCK_URL\"
ca_file = \"$WORK/ca/ca.crt\"
http2 = true"
    SLUICE_PID=$LAUNCHED_PID
    sleep 1
    local idle
    idle=$(rss_kb "$SLUICE_PID")
    run_streams streams sluice "${STREAMS[@]}"
    kill -0 "$SLUICE_PID" 2>/dev/null || die "sluice died during the stream test"
    local n=${STREAMS[0]} peak
    peak=$(cat "$WORK/streams/streams.peak_kb")
    {
        echo "## sluice: concurrent SSE streams through an HTTP/2 upstream$( ((QUICK)) && echo " (quick run)")"
        echo
        echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r)"
        echo "- sluice $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '(uncommitted)'), one worker, routes.http2 = true, SQLite store on"
        if ((MACHINE_BUSY > 10)); then echo "- the machine was ${MACHINE_BUSY}% busy before the run: RSS figures hold, latencies are noisy"; fi
        if ((n < wanted)); then echo "- capped to $n streams by the open-files limit $FD_LIMIT"; fi
        echo
        echo "| | sluice | target | result |"
        echo "|---|---:|---|---|"
        printf '| RSS idle | %s | | |\n' "$(mb "$idle")"
        printf '| peak RSS, %d concurrent SSE streams | %s | ≤ 200 MB | %s |\n' "$n" "$(mb "$peak")" \
            "$(pass_if "$peak * 1024 <= 200e6 && $n >= 10000")"
        printf '| memory per stream (peak − idle) ÷ streams | %s KB | | |\n' \
            "$(awk -v p="$peak" -v i="$idle" -v n="$n" 'BEGIN { printf "%.1f", (p - i) * 1.024 / n }')"
        printf '| streams complete | %s/%s (%s held at once) | all | %s |\n' "$(st streams .ok)" "$(st streams .streams)" \
            "$(st streams .max_concurrent)" "$(pass_if "$(st streams .failed) == 0")"
        printf '| upstream connections open at most | %s | | |\n' "$(cat "$WORK/streams/streams.peak_conns")"
        printf '| SSE event latency p50 / p99 | %s / %s | | |\n' "$(ms "$(st streams .latency_us.p50)")" "$(ms "$(st streams .latency_us.p99)")"
        echo
        echo "Streams: each is one HTTP/1.1 connection from stream_load to sluice posting \`\"stream\":true\`; the mock answers ${STREAMS[1]} content_block_delta events ${STREAMS[2]} ms apart over HTTPS; starts spread over ${STREAMS[3]} ms. RSS sampled every 50 ms."
    } >"$WORK/report.md"
    [[ -z $OUT ]] || cp "$WORK/report.md" "$OUT"
    echo
    cat "$WORK/report.md"
    SUCCESS=1
}

main "$@"
