#!/usr/bin/env bash
# bench/run.sh — sluice side by side with nginx and with no proxy at all.
#
# One run, on this machine, against a local mock upstream (examples/mock_upstream.rs):
#   1. throughput and latency: wrk POSTs /v1/messages directly to the mock, through nginx
#      (proxy_pass + upstream keepalive) and through sluice, rounds alternating A B C A B C,
#      median per target;
#   2. memory: sluice's RSS idle, after the throughput run, and at its peak while
#      examples/stream_load.rs holds 1,000 and 10,000 concurrent slow SSE streams through it;
#   3. time added per SSE event: per-event latency through sluice minus direct;
#   4. the OpenAI route: wrk POSTs streamed Responses API requests (`/v1/responses`, 10 text
#      deltas and a `response.completed` with usage each) directly to the mock and through
#      sluice's `/openai/v1` route, rounds alternating, and /stats must have read every answer's
#      usage.
# It prints a markdown report and writes it to bench/results.md (docs/performance.md embeds that file).
#
# Usage: bench/run.sh [--quick] [--out FILE] [--keep]
#   --quick     short run (2 rounds of 3 s, short streams) to check that everything works
#   --out FILE  where to write the report (default: bench/results.md)
#   --keep      keep the temporary directory (logs, wrk output, stream reports) afterwards
# Environment:
#   SLUICE_BIN, MOCK_BIN, LOAD_BIN   use these binaries instead of building them
#   BENCH_TARGETS                    subset of "direct nginx sluice" (default: all three)
#   SUT_CPU, HARNESS_CPU             CPU numbers for the pinning described below (0 and 1)
#   BENCH_SLUICE_EXTRA               TOML appended to sluice's settings (e.g. "[store]\npath = \"\"")
#   BENCH_STREAMS=0                  throughput only: skip the memory and streaming tests
#   BENCH_OPENAI=0                   skip the OpenAI-route run
#
# 10,000 streams need about 20,100 open files in sluice (a client and an upstream socket each):
# where the hard limit is lower (`ulimit -Hn`), the large test is capped to fit and the report
# says so.
#
# Fairness on a 2-core machine: every server runs with one worker. The server under test
# (the mock for "direct", else nginx or sluice) is pinned alone to SUT_CPU; wrk (1 thread) and
# the mock upstream share HARNESS_CPU. So each column is "what one core of that server does",
# nginx and sluice face exactly the same load generator and upstream, and the report shows how
# busy each core was so a saturated harness core would be visible.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
OUT="$ROOT/bench/results.md"
QUICK=0
KEEP=0
TARGETS=${BENCH_TARGETS:-direct nginx sluice}
SUT_CPU=${SUT_CPU:-0}
HARNESS_CPU=${HARNESS_CPU:-1}
API_KEY="sk-ant-api03-test-bench-0000000000000000"
OPENAI_KEY="sk-proj-test-bench-0000000000000000"
CONNECTIONS=32

PIDS=()       # every process this script started, killed on exit
SUCCESS=0
# Filled in as the run goes; defaults keep the report readable when a target is skipped.
RSS_IDLE=0 RSS_AFTER_TP=0 NGINX_RSS_IDLE=0 NGINX_RSS_AFTER_TP=0 OVERHEAD_P50_US=nan MACHINE_BUSY=0
STORE_DROPPED=nan STORE_WRITTEN=nan
UPSTREAM_TLS=0 COUNT_UPSTREAM=0

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------

parse_args() {
    parse_options "$@"
    if ((QUICK)); then
        ROUNDS=2 DURATION=3 WARMUP=1
        # streams: count events interval_ms ramp_ms
        SMALL_STREAMS=(1000 10 200 1000)
        LARGE_STREAMS=(10000 10 500 3000)
    else
        ROUNDS=3 DURATION=10 WARMUP=2
        SMALL_STREAMS=(1000 20 500 2000)
        LARGE_STREAMS=(10000 20 1000 5000)
    fi
}

# The large stream test needs two sockets in sluice per stream: sized to fit the open-files
# limit.
size_large_streams() {
    local fit=$(((FD_LIMIT - 256) / 2))
    LARGE_WANTED=${LARGE_STREAMS[0]}
    if ((fit < LARGE_WANTED)); then
        log "open-files hard limit is $FD_LIMIT: sluice can hold at most ~$fit streams (2 sockets each);" \
            "the ${LARGE_WANTED}-stream test runs with $fit (raise the hard limit, e.g. LimitNOFILE, for the full test)"
        LARGE_STREAMS[0]=$fit
    fi
}

start_sluice() {
    SLUICE_PORT=$(free_port)
    # Beside /anthropic, the OpenAI route of the built-in settings, to the same mock.
    launch_sluice sluice "$WORK" "$SLUICE_PORT" "upstream = \"http://127.0.0.1:$MOCK_PORT\"

[[routes]]
prefix = \"/openai/v1\"
protocol = \"openai\"
upstream = \"http://127.0.0.1:$MOCK_PORT/v1\""
    SLUICE_PID=$LAUNCHED_PID
}

pid_of() {
    case ${1#responses-} in direct) echo "$MOCK_PID" ;; nginx) echo "$NGINX_PID" ;; sluice) echo "$SLUICE_PID" ;; esac
}

url_of() {
    case $1 in
        direct) echo "http://127.0.0.1:$MOCK_PORT/v1/messages" ;;
        nginx) echo "http://127.0.0.1:$NGINX_PORT/v1/messages" ;;
        sluice) echo "http://127.0.0.1:$SLUICE_PORT/anthropic/v1/messages" ;;
        responses-direct) echo "http://127.0.0.1:$MOCK_PORT/v1/responses" ;;
        responses-sluice) echo "http://127.0.0.1:$SLUICE_PORT/openai/v1/responses" ;;
    esac
}

# Put the server under test alone on SUT_CPU, everything else on HARNESS_CPU
# ("none": everything on HARNESS_CPU).
arrange_cpus() {
    local target=${1#responses-}
    pin "$MOCK_PID" "$HARNESS_CPU"
    has_target nginx && pin "$NGINX_PID" "$HARNESS_CPU"
    has_target sluice && pin "$SLUICE_PID" "$HARNESS_CPU"
    case $target in
        direct) pin "$MOCK_PID" "$SUT_CPU" ;;
        nginx) pin "$NGINX_PID" "$SUT_CPU" ;;
        sluice) pin "$SLUICE_PID" "$SUT_CPU" ;;
    esac
}

# A streamed Responses API request, as Codex sends one, answered at once (no pause between
# the deltas): the proxy's cost per streamed answer, usage reader included.
write_responses_script() {
    write_wrk_request responses.lua '{"model":"gpt-5.3-codex","input":"Hello","stream":true}' \
        content-type=application/json "authorization=Bearer $OPENAI_KEY" \
        x-mock-events=10 x-mock-interval-ms=0
}

# The OpenAI route's run: rounds alternating direct and sluice, as measure_throughput does.
measure_responses() {
    local round target line before after
    mkdir -p "$WORK/tp"
    for round in $(seq 1 "$ROUNDS"); do
        for target in responses-direct responses-sluice; do
            arrange_cpus "$target"
            wrk_once "$target" "$WARMUP" responses.lua >/dev/null
            before="$(cpu_ticks "$SUT_CPU");$(cpu_ticks "$HARNESS_CPU")"
            line=$(wrk_once "$target" "$DURATION" responses.lua)
            after="$(cpu_ticks "$SUT_CPU");$(cpu_ticks "$HARNESS_CPU")"
            line+=" $(busy_percent "${before%;*}" "${after%;*}") $(busy_percent "${before#*;}" "${after#*;}")"
            echo "$line" >>"$WORK/tp/$target"
            log "round $round/$ROUNDS $target: $(awk '{ printf "%.0f req/s, p50 %d µs, p99 %d µs, errors %d+%d", $1, $2, $3, $4, $5 }' <<<"$line")"
        done
    done
    # Every answer's usage read: 11 output tokens each (10 deltas + 1) on the openai provider.
    # wrk drops its open connections when a round ends: those requests are `incomplete`, and
    # one the client left before the answer began has no tokens to read.
    sleep 1
    curl -fsS --max-time 5 "http://127.0.0.1:$SLUICE_PORT/stats" \
        | jq -r '.by_provider.openai // {} | "\(.requests // 0) \(.output_tokens // 0) \(.usage_missing // 0) \(.incomplete // 0)"' \
        >"$WORK/responses-counted" || echo "0 0 0 0" >"$WORK/responses-counted"
}

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

stream_cell() { # LABEL: "peak RSS (ok/streams ok)"
    local label=$1
    printf '%s (%s/%s streams complete, %s held at once)' \
        "$(mb "$(cat "$WORK/streams/$label.peak_kb")")" "$(st "$label" .ok)" "$(st "$label" .streams)" \
        "$(st "$label" .max_concurrent)"
}

write_report() {
    local rps_n rps_s p50_n p50_s p99_n p99_s
    {
        echo "## sluice benchmark$( ((QUICK)) && echo " (quick run)")"
        echo
        echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
        echo "- tools: $("$NGINX" -v 2>&1 | sed 's/nginx version: //'), $(wrk -v 2>&1 | head -n 1 | awk '{ print "wrk", $2 }'), sluice $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '(uncommitted)')"
        echo "- method: one worker per server; server under test pinned to CPU $SUT_CPU, wrk (1 thread, $CONNECTIONS connections) and the mock upstream on CPU $HARNESS_CPU$( ((PINNING)) || echo " (pinning off)"); $ROUNDS rounds × ${DURATION} s alternating targets, median shown"
        if ((MACHINE_BUSY > 10)); then echo "- **warning:** the machine was ${MACHINE_BUSY}% busy before the run; numbers are noisy"; fi
        echo
        echo "### Throughput: POST /v1/messages (small JSON answer)"
        echo
        echo "| | direct to mock | nginx | sluice | sluice ÷ nginx | target | result |"
        echo "|---|---:|---:|---:|---:|---|---|"
        rps_n=$(tp nginx 1) rps_s=$(tp sluice 1) p50_n=$(tp nginx 2) p50_s=$(tp sluice 2) p99_n=$(tp nginx 3) p99_s=$(tp sluice 3)
        printf '| requests/s | %s | %s | %s | %s | ≥ 0.70× (goal 1.0×) | %s |\n' "$(count "$(tp direct 1)")" "$(count "$rps_n")" "$(count "$rps_s")" \
            "$(ratio "$rps_s" "$rps_n")" "$(pass_if "$rps_s >= 0.70 * $rps_n && $rps_s > 0")"
        printf '| latency p50 | %s | %s | %s | %s | | |\n' "$(ms "$(tp direct 2)")" "$(ms "$p50_n")" "$(ms "$p50_s")" "$(ratio "$p50_s" "$p50_n")"
        printf '| latency p99 | %s | %s | %s | %s | ≤ 2.0× (goal 1.2×) | %s |\n' "$(ms "$(tp direct 3)")" "$(ms "$p99_n")" "$(ms "$p99_s")" \
            "$(ratio "$p99_s" "$p99_n")" "$(pass_if "$p99_n > 0 && $p99_s > 0 && $p99_s <= 2.0 * $p99_n")"
        printf '| errors (all rounds) | %s | %s | %s | | 0 | %s |\n' "$(tp direct errors)" "$(tp nginx errors)" "$(tp sluice errors)" \
            "$(pass_if "$(tp sluice errors) == 0")"
        if has_target sluice; then
            printf '| store rows dropped (of rows written) | | | %s (of %s) | | 0 | %s |\n' "$STORE_DROPPED" "$STORE_WRITTEN" \
                "$(pass_if "\"$STORE_DROPPED\" == \"0\"")"
        fi
        printf '| server core busy | %s | %s | %s | | | |\n' "$(percent "$(tp direct 6)")" "$(percent "$(tp nginx 6)")" "$(percent "$(tp sluice 6)")"
        printf '| wrk + mock core busy | %s | %s | %s | | | |\n' "$(percent "$(tp direct 7)")" "$(percent "$(tp nginx 7)")" "$(percent "$(tp sluice 7)")"
        echo
        if has_target sluice && [[ ${BENCH_STREAMS:-1} != 0 ]]; then
            local small=${SMALL_STREAMS[0]} large=${LARGE_STREAMS[0]} large_ok add50 add99
            echo "### Memory and streaming (sluice)"
            echo
            echo "| | sluice | reference | target | result |"
            echo "|---|---|---|---|---|"
            printf '| RSS idle | %s | nginx %s | ≤ 10 MB | %s |\n' "$(mb "$RSS_IDLE")" "$(mb "$NGINX_RSS_IDLE")" \
                "$(pass_if "$RSS_IDLE * 1024 <= 10e6")"
            printf '| RSS after the throughput run | %s | nginx %s | | |\n' "$(mb "$RSS_AFTER_TP")" "$(mb "$NGINX_RSS_AFTER_TP")"
            printf '| peak RSS, %d concurrent SSE streams | %s | direct: %s/%s complete | all complete | %s |\n' \
                "$small" "$(stream_cell "sluice-$small")" "$(st "direct-$small" .ok)" "$(st "direct-$small" .streams)" \
                "$(pass_if "$(st "sluice-$small" .failed) == 0")"
            large_ok=$(st "sluice-$large" .failed)
            printf '| peak RSS, %d concurrent SSE streams%s | %s | direct: %s/%s complete | ≤ 100 MB at 10,000, all complete | %s |\n' \
                "$large" "$( ((large < LARGE_WANTED)) && echo " (capped by the open-files limit $FD_LIMIT)")" \
                "$(stream_cell "sluice-$large")" "$(st "direct-$large" .ok)" "$(st "direct-$large" .streams)" \
                "$(pass_if "$large_ok == 0 && $(cat "$WORK/streams/sluice-$large.peak_kb") * 1024 <= 100e6 && $large >= $LARGE_WANTED")"
            printf '| SSE event latency p50 / p99 (%d streams) | %s / %s | direct: %s / %s | | |\n' "$small" \
                "$(ms "$(st "sluice-$small" .latency_us.p50)")" "$(ms "$(st "sluice-$small" .latency_us.p99)")" \
                "$(ms "$(st "direct-$small" .latency_us.p50)")" "$(ms "$(st "direct-$small" .latency_us.p99)")"
            add50=$(( $(st "sluice-$small" .latency_us.p50) - $(st "direct-$small" .latency_us.p50) ))
            add99=$(( $(st "sluice-$small" .latency_us.p99) - $(st "direct-$small" .latency_us.p99) ))
            printf '| time added per SSE event p50 / p99 | %s / %s | | p99 ≤ 1 ms | %s |\n' "$(ms "$add50")" "$(ms "$add99")" \
                "$(pass_if "$add99 <= 1000")"
            if [[ $OVERHEAD_P50_US == nan ]]; then
                echo "| overhead p50 in /stats | n/a | | ≤ 50 µs | **FAIL** |"
            else
                printf '| overhead p50 in /stats | %.0f µs | | ≤ 50 µs | %s |\n' "$OVERHEAD_P50_US" "$(pass_if "$OVERHEAD_P50_US <= 50")"
            fi
            echo
            echo "Streams: each is one HTTP/1.1 connection posting \`\"stream\":true\`; the mock answers message_start, ${SMALL_STREAMS[1]} (${LARGE_STREAMS[1]} for the large test) content_block_delta events ${SMALL_STREAMS[2]} ms (${LARGE_STREAMS[2]} ms) apart, then message_stop; starts are spread over ${SMALL_STREAMS[3]} ms (${LARGE_STREAMS[3]} ms). An event's latency runs from the mock stamping it to stream_load reading it; \"time added\" is sluice's percentile minus the direct one. sluice logs at its default level (one line per request) to a file."
        fi
        if [[ -s $WORK/tp/responses-sluice ]]; then
            local rps_d rps_o counted_requests counted_output missing cut
            read -r counted_requests counted_output missing cut <"$WORK/responses-counted"
            rps_d=$(tp responses-direct 1) rps_o=$(tp responses-sluice 1)
            echo
            echo "### OpenAI route: POST /v1/responses, streamed (10 deltas + response.completed)"
            echo
            echo "| | direct to mock | sluice /openai/v1 | sluice ÷ direct | target | result |"
            echo "|---|---:|---:|---:|---|---|"
            printf '| requests/s | %s | %s | %s | | |\n' "$(count "$rps_d")" "$(count "$rps_o")" "$(ratio "$rps_o" "$rps_d")"
            printf '| latency p50 | %s | %s | %s | | |\n' "$(ms "$(tp responses-direct 2)")" "$(ms "$(tp responses-sluice 2)")" \
                "$(ratio "$(tp responses-sluice 2)" "$(tp responses-direct 2)")"
            printf '| latency p99 | %s | %s | %s | | |\n' "$(ms "$(tp responses-direct 3)")" "$(ms "$(tp responses-sluice 3)")" \
                "$(ratio "$(tp responses-sluice 3)" "$(tp responses-direct 3)")"
            printf '| errors (all rounds) | %s | %s | | 0 | %s |\n' "$(tp responses-direct errors)" "$(tp responses-sluice errors)" \
                "$(pass_if "$(tp responses-sluice errors) == 0")"
            printf '| usage read (/stats by_provider.openai) | | %s requests (%s cut by wrk at a round'"'"'s end), %s output tokens, %s without usage | 11 output tokens per whole answer | %s |\n' \
                "$counted_requests" "$cut" "$counted_output" "$missing" \
                "$(pass_if "$counted_requests > 0 && $counted_output >= 11 * ($counted_requests - $cut) && $counted_output <= 11 * $counted_requests && $missing <= $cut")"
        fi
    } >"$OUT"
}

# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

main() {
    parse_args "$@"
    install_tools
    build
    raise_fd_limit
    size_large_streams
    decide_pinning
    check_quiet
    write_wrk_script
    write_responses_script

    start_mock
    has_target nginx && start_nginx
    if has_target sluice; then
        start_sluice
        sleep 1
        RSS_IDLE=$(rss_kb "$SLUICE_PID")
    fi
    has_target nginx && NGINX_RSS_IDLE=$(rss_kb "$NGINX_PID")

    log "throughput: $ROUNDS rounds × ${DURATION} s per target ($TARGETS)"
    measure_throughput
    sleep 1
    if has_target sluice; then
        RSS_AFTER_TP=$(rss_kb "$SLUICE_PID")
        curl -fsS --max-time 5 "http://127.0.0.1:$SLUICE_PORT/stats" >"$WORK/stats.json" || true
        OVERHEAD_P50_US=$(jq -r '.latency_ms.overhead.p50 // empty | . * 1000' "$WORK/stats.json" 2>/dev/null || true)
        OVERHEAD_P50_US=${OVERHEAD_P50_US:-nan}
        STORE_DROPPED=$(jq -r '.store.dropped // "nan"' "$WORK/stats.json" 2>/dev/null || echo nan)
        STORE_WRITTEN=$(jq -r '.store.rows_written // "nan"' "$WORK/stats.json" 2>/dev/null || echo nan)
    fi
    has_target nginx && NGINX_RSS_AFTER_TP=$(rss_kb "$NGINX_PID")

    if has_target sluice && [[ ${BENCH_OPENAI:-1} != 0 ]]; then
        log "OpenAI route: $ROUNDS rounds × ${DURATION} s, streamed Responses API requests"
        measure_responses
    fi

    if has_target sluice && [[ ${BENCH_STREAMS:-1} != 0 ]]; then
        # Direct first each time: the reference the "time added" is taken against.
        run_streams "direct-${SMALL_STREAMS[0]}" direct "${SMALL_STREAMS[@]}"
        run_streams "sluice-${SMALL_STREAMS[0]}" sluice "${SMALL_STREAMS[@]}"
        run_streams "direct-${LARGE_STREAMS[0]}" direct "${LARGE_STREAMS[@]}"
        run_streams "sluice-${LARGE_STREAMS[0]}" sluice "${LARGE_STREAMS[@]}"
        kill -0 "$SLUICE_PID" 2>/dev/null || { show_log "$WORK/sluice.log"; die "sluice died during the stream tests"; }
    fi

    write_report
    echo
    cat "$OUT"
    echo
    log "report written to $OUT"
    SUCCESS=1
}

main "$@"
