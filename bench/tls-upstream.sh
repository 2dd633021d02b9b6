#!/usr/bin/env bash
# bench/tls-upstream.sh — the real API is HTTPS: three proxies in front of the mock upstream
# (examples/mock_upstream.rs) serving HTTPS, h2 and http/1.1 by ALPN, with a certificate from
# a CA made for the run:
#   - sluice with routes.http2 = true (its requests share HTTP/2 connections as streams),
#   - sluice with routes.http2 = false (a pooled HTTP/1.1 connection per request in flight),
#   - nginx, proxy_pass https:// with upstream keepalive, verifying the certificate.
# Measured:
#   1. throughput and latency: wrk POSTs /v1/messages through each, rounds alternating the
#      targets, median per target;
#   2. concurrent slow SSE streams (examples/stream_load.rs, 1,000) through each: the proxy's
#      peak RSS and the most connections it held open to the upstream at once (ESTABLISHED
#      sockets to the mock's port owned by the proxy, sampled with `ss`).
# It prints a markdown report (and writes it to --out FILE when given).
#
# Usage: bench/tls-upstream.sh [--quick] [--out FILE] [--keep]
#   --quick     short run (2 rounds of 3 s, 200 short streams) to check that everything works
#   --out FILE  also write the report to FILE
#   --keep      keep the temporary directory (logs, wrk output, stream reports) afterwards
# Environment: SLUICE_BIN, MOCK_BIN, LOAD_BIN, SUT_CPU, HARNESS_CPU as for bench/run.sh.
#
# Pinning as in bench/run.sh: the proxy under test alone on SUT_CPU; wrk or stream_load, the
# mock and the idle proxies on HARNESS_CPU.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench-tls.XXXXXX")
OUT=""
QUICK=0
KEEP=0
TARGETS="sluice-h2 sluice-h1 nginx"
SUT_CPU=${SUT_CPU:-0}
HARNESS_CPU=${HARNESS_CPU:-1}
API_KEY="sk-ant-api03-test-bench-0000000000000000"
CONNECTIONS=32
PIDS=()
SUCCESS=0
MACHINE_BUSY=0
UPSTREAM_TLS=1 COUNT_UPSTREAM=1
declare -A PID_OF PORT_OF RSS_IDLE

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

parse_args() {
    parse_options "$@"
    # streams: count events interval_ms ramp_ms
    if ((QUICK)); then
        ROUNDS=2 DURATION=3 WARMUP=1
        STREAMS=(200 5 100 500)
    else
        ROUNDS=3 DURATION=10 WARMUP=2
        STREAMS=(1000 20 500 2000)
    fi
}

# start_sluice NAME HTTP2: a sluice of its own (settings, store and log in $WORK/NAME).
start_sluice() {
    local name=$1 http2=$2
    mkdir -p "$WORK/$name"
    PORT_OF[$name]=$(free_port)
    launch_sluice "$name" "$WORK/$name" "${PORT_OF[$name]}" \
        "upstream = \"$MOCK_URL\"
ca_file = \"$WORK/ca/ca.crt\"
http2 = $http2"
    PID_OF[$name]=$LAUNCHED_PID
}

pid_of() { echo "${PID_OF[$1]}"; }

url_of() {
    case $1 in
        nginx) echo "http://127.0.0.1:$NGINX_PORT/v1/messages" ;;
        *) echo "http://127.0.0.1:${PORT_OF[$1]}/anthropic/v1/messages" ;;
    esac
}

arrange_cpus() {
    local target=$1 other
    pin "$MOCK_PID" "$HARNESS_CPU"
    for other in $TARGETS; do pin "${PID_OF[$other]}" "$HARNESS_CPU"; done
    pin "${PID_OF[$target]}" "$SUT_CPU"
}

write_report() {
    local n=${STREAMS[0]} t
    row() { # LABEL CELL-FUNCTION
        printf '| %s |' "$1"
        for t in $TARGETS; do printf ' %s |' "$("$2" "$t")"; done
        echo
    }
    rps() { count "$(tp "$1" 1)"; }
    p50() { ms "$(tp "$1" 2)"; }
    p99() { ms "$(tp "$1" 3)"; }
    errors() { tp "$1" errors; }
    busy() { percent "$(tp "$1" 6)"; }
    idle() { mb "${RSS_IDLE[$1]}"; }
    peak() { mb "$(cat "$WORK/streams/$1.peak_kb")"; }
    conns() { cat "$WORK/streams/$1.peak_conns"; }
    done_streams() { echo "$(st "$1" .ok)/$(st "$1" .streams)"; }
    event_latency() { echo "$(ms "$(st "$1" .latency_us.p50)") / $(ms "$(st "$1" .latency_us.p99)")"; }
    {
        echo "## sluice with an HTTPS upstream$( ((QUICK)) && echo " (quick run)")"
        echo
        echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), kernel $(uname -r)"
        echo "- tools: $("$NGINX" -v 2>&1 | sed 's/nginx version: //'), $(wrk -v 2>&1 | head -n 1 | awk '{ print "wrk", $2 }'), sluice $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '(uncommitted)')"
        echo "- method: the mock upstream serves HTTPS (h2 and http/1.1 by ALPN); one worker per proxy, the proxy under test pinned to CPU $SUT_CPU, wrk (1 thread, $CONNECTIONS connections) and the mock on CPU $HARNESS_CPU$( ((PINNING)) || echo " (pinning off)"); $ROUNDS rounds × ${DURATION} s alternating targets, median shown"
        if ((MACHINE_BUSY > 10)); then echo "- **warning:** the machine was ${MACHINE_BUSY}% busy before the run; numbers are noisy"; fi
        echo
        printf '|'; for t in $TARGETS; do
            case $t in
                sluice-h2) printf ' | sluice, HTTP/2 upstream' ;;
                sluice-h1) printf ' | sluice, HTTP/1.1 upstream' ;;
                nginx) printf ' | nginx, proxy_pass https://' ;;
            esac
        done; echo ' |'
        printf '|---|'; for _ in $TARGETS; do printf -- '---:|'; done; echo
        row "requests/s (POST /v1/messages, JSON)" rps
        row "latency p50" p50
        row "latency p99" p99
        row "errors (all rounds)" errors
        row "proxy core busy" busy
        row "RSS idle" idle
        row "peak RSS, $n concurrent SSE streams" peak
        row "upstream connections open at most, $n streams" conns
        row "streams complete" done_streams
        row "SSE event latency p50 / p99" event_latency
        echo
        echo "Streams: each is one HTTP/1.1 connection from stream_load to the proxy posting \`\"stream\":true\`; the mock answers ${STREAMS[1]} content_block_delta events ${STREAMS[2]} ms apart; starts spread over ${STREAMS[3]} ms. Upstream connections: the most ESTABLISHED sockets from the proxy to the mock's port seen at once (\`ss\`, every 200 ms)."
    } >"$WORK/report.md"
    [[ -z $OUT ]] || cp "$WORK/report.md" "$OUT"
}

main() {
    parse_args "$@"
    install_tools
    command -v openssl >/dev/null || die "openssl is needed for the test CA"
    command -v ss >/dev/null || die "ss (iproute2) is needed to count upstream connections"
    build
    raise_fd_limit
    decide_pinning
    check_quiet
    write_wrk_script
    make_test_ca

    start_mock
    start_nginx
    PID_OF[nginx]=$NGINX_PID
    start_sluice sluice-h2 true
    start_sluice sluice-h1 false
    sleep 1
    local target
    for target in $TARGETS; do RSS_IDLE[$target]=$(rss_kb "${PID_OF[$target]}"); done

    log "throughput: $ROUNDS rounds × ${DURATION} s per target ($TARGETS)"
    measure_throughput
    for target in $TARGETS; do
        run_streams "$target" "$target" "${STREAMS[@]}"
        kill -0 "${PID_OF[$target]}" 2>/dev/null || die "$target died during the stream test"
    done

    write_report
    echo
    cat "$WORK/report.md"
    echo
    [[ -z $OUT ]] || log "report written to $OUT"
    SUCCESS=1
}

main "$@"
