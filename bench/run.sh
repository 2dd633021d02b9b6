#!/usr/bin/env bash
# bench/run.sh — sluice side by side with nginx and with no proxy at all.
#
# One run, on this machine, against a local mock upstream (examples/mock_upstream.rs):
#   1. throughput and latency: wrk POSTs /v1/messages directly to the mock, through nginx
#      (proxy_pass + upstream keepalive) and through sluice, rounds alternating A B C A B C,
#      median per target;
#   2. memory: sluice's RSS idle, after the throughput run, and at its peak while
#      examples/stream_load.rs holds 1,000 and 10,000 concurrent slow SSE streams through it;
#   3. time added per SSE event: per-event latency through sluice minus direct.
# It prints a markdown report and writes it to bench/results.md (the README embeds that file).
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
CONNECTIONS=32

PIDS=()       # every process this script started, killed on exit
SUCCESS=0
# Filled in as the run goes; defaults keep the report readable when a target is skipped.
RSS_IDLE=0 RSS_AFTER_TP=0 NGINX_RSS_IDLE=0 NGINX_RSS_AFTER_TP=0 OVERHEAD_P50_US=nan MACHINE_BUSY=0

# ---------------------------------------------------------------------------------------------
# Plumbing
# ---------------------------------------------------------------------------------------------

show_log() { tail -n 30 "$1" >&2 2>/dev/null || true; }
log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf '[bench] ERROR: %s\n' "$*" >&2; exit 1; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # Give each a moment to exit cleanly, then make sure.
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $SUCCESS == 1 && $KEEP == 0 ]]; then
        rm -rf "$WORK"
    else
        log "logs kept in $WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

has_target() { [[ " $TARGETS " == *" $1 "* ]]; }

# A port nobody listens on, below the kernel's ephemeral range so the stream tests' many
# client sockets cannot take it.
TAKEN_PORTS=" "
free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 10000))
        [[ $TAKEN_PORTS == *" $port "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            TAKEN_PORTS+="$port "
            echo "$port"
            return
        fi
    done
    die "no free port found on 127.0.0.1"
}

# wait_up NAME PID LOGFILE CURL-ARGS... : poll until curl succeeds, or fail with the log's tail.
wait_up() {
    local name=$1 pid=$2 logfile=$3
    shift 3
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || { show_log "$logfile"; die "$name exited during startup"; }
        if curl -fsS --max-time 1 -o /dev/null "$@" 2>/dev/null; then return; fi
        sleep 0.1
    done
    show_log "$logfile"
    die "$name did not come up within 30 s"
}

# children_of PID: its child processes (nginx's worker), space separated.
children_of() { cat /proc/"$1"/task/*/children 2>/dev/null || true; }

# pin PID CPUS: all threads of PID (and of its children, for nginx's workers) onto CPUS.
pin() {
    [[ $PINNING == 1 ]] || return 0
    local pid=$1 cpus=$2 child
    taskset -a -pc "$cpus" "$pid" >/dev/null
    for child in $(children_of "$pid"); do
        taskset -a -pc "$cpus" "$child" >/dev/null
    done
}

# on_cpu CPUS CMD...: run CMD pinned (or as is without pinning).
on_cpu() {
    local cpus=$1
    shift
    if [[ $PINNING == 1 ]]; then taskset -c "$cpus" "$@"; else "$@"; fi
}

# rss_kb PID: resident set in KiB, children included (nginx's master + worker).
rss_kb() {
    local pid=$1 total child
    total=$(awk '/^VmRSS/ {print $2}' /proc/"$pid"/status)
    for child in $(children_of "$pid"); do
        total=$((total + $(awk '/^VmRSS/ {print $2}' /proc/"$child"/status)))
    done
    echo "$total"
}

# sample_peak_rss PID FILE: write the highest RSS seen to FILE until killed.
sample_peak_rss() {
    local pid=$1 file=$2 peak=0 rss
    while kill -0 "$pid" 2>/dev/null; do
        rss=$(awk '/^VmRSS/ {print $2}' /proc/"$pid"/status 2>/dev/null || echo 0)
        if ((rss > peak)); then peak=$rss; echo "$peak" >"$file"; fi
        sleep 0.05
    done
}

# cpu_ticks CPU: "busy total" jiffies of one CPU, to tell how busy it was during a run.
cpu_ticks() {
    awk -v c="cpu$1" '$1 == c { idle = $5 + $6; t = 0; for (i = 2; i <= 9; i++) t += $i; print t - idle, t }' /proc/stat
}
busy_percent() { # BEFORE AFTER (each "busy total")
    awk -v b="$1" -v a="$2" 'BEGIN { split(b, x, " "); split(a, y, " ");
        d = y[2] - x[2]; printf "%d", (d > 0 ? 100 * (y[1] - x[1]) / d : 0) }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan";
    else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Formatting helpers for the report.
# A target left out (BENCH_TARGETS) shows as "—".
fmt() { # PRINTF-FORMAT SCALE VALUE
    if [[ $3 == nan ]]; then echo —; else awk -v v="$3" -v s="$2" -v f="$1" 'BEGIN { printf f, v * s }'; fi
}
mb() { fmt "%.1f MB" 1024e-6 "$1"; }
ms() { fmt "%.2f ms" 1e-3 "$1"; }
count() { fmt "%.0f" 1 "$1"; }
percent() { fmt "%.0f%%" 1 "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "nan" && b > 0) printf "%.2f×", a / b; else print "—" }'; }
pass_if() { awk "BEGIN { exit !($1) }" && echo pass || echo "**FAIL**"; }

# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------

parse_args() {
    while (($#)); do
        case $1 in
            --quick) QUICK=1 ;;
            --out) OUT=$2; shift ;;
            --keep) KEEP=1 ;;
            -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
            *) die "unknown option $1 (try --help)" ;;
        esac
        shift
    done
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

install_tools() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    command -v curl >/dev/null || missing+=(curl)
    command -v jq >/dev/null || missing+=(jq)
    command -v taskset >/dev/null || missing+=(util-linux)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} from Debian's packages"
        ((EUID == 0)) || die "need root to apt-get install ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        # policy-rc.d keeps the package from starting a system nginx on port 80.
        local policy=/usr/sbin/policy-rc.d created_policy=0
        if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1; fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >"$WORK/apt.log" 2>&1 \
            || { tail -n 20 "$WORK/apt.log" >&2; ((created_policy)) && rm -f "$policy"; die "apt-get install failed"; }
        ((created_policy)) && rm -f "$policy"
    fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

build() {
    command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
    local target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
    if has_target sluice && [[ -z ${SLUICE_BIN:-} ]]; then
        log "building sluice (release)"
        (cd "$ROOT" && cargo build --release --quiet --bin sluice) || die "cargo build --release failed"
        # Copied aside: building the examples below turns on the dev-dependencies' features
        # (the tests' `test-hooks`) and would rebuild this path with them.
        cp "$target_dir/release/sluice" "$WORK/sluice"
        SLUICE_BIN=$WORK/sluice
    fi
    if [[ -z ${MOCK_BIN:-} || -z ${LOAD_BIN:-} ]]; then
        log "building examples mock_upstream and stream_load (release)"
        (cd "$ROOT" && cargo build --release --quiet --example mock_upstream --example stream_load) \
            || die "building the bench examples failed"
        MOCK_BIN=${MOCK_BIN:-$target_dir/release/examples/mock_upstream}
        LOAD_BIN=${LOAD_BIN:-$target_dir/release/examples/stream_load}
    fi
    local bin
    for bin in "$MOCK_BIN" "$LOAD_BIN" ${SLUICE_BIN:+"$SLUICE_BIN"}; do
        [[ -x $bin ]] || die "not an executable: $bin"
    done
}

# Every stream holds a socket in stream_load and two in sluice (client side, upstream side):
# raise the open-files limit as far as allowed and size the big stream test to fit.
raise_fd_limit() {
    local hard
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] && hard=1048576
    ulimit -n "$hard"
    FD_LIMIT=$hard
    local fit=$(((FD_LIMIT - 256) / 2))
    LARGE_WANTED=${LARGE_STREAMS[0]}
    if ((fit < LARGE_WANTED)); then
        log "open-files hard limit is $FD_LIMIT: sluice can hold at most ~$fit streams (2 sockets each);" \
            "the ${LARGE_WANTED}-stream test runs with $fit (raise the hard limit, e.g. LimitNOFILE, for the full test)"
        LARGE_STREAMS[0]=$fit
    fi
}

decide_pinning() {
    PINNING=1
    if (($(nproc) < 2)) || ! command -v taskset >/dev/null; then
        PINNING=0
        log "fewer than 2 CPUs: no pinning, results are only indicative"
    fi
}

# Other work on the machine (a compiler, say) skews everything: measure and warn.
check_quiet() {
    local before after busy
    before=$(awk '$1 == "cpu" { idle = $5 + $6; t = 0; for (i = 2; i <= 9; i++) t += $i; print t - idle, t }' /proc/stat)
    sleep 1
    after=$(awk '$1 == "cpu" { idle = $5 + $6; t = 0; for (i = 2; i <= 9; i++) t += $i; print t - idle, t }' /proc/stat)
    busy=$(busy_percent "$before" "$after")
    MACHINE_BUSY=$busy
    if ((busy > 10)); then
        log "WARNING: the machine was ${busy}% busy before the run: results will be noisy"
    fi
}

start_mock() {
    MOCK_PORT=$(free_port)
    "$MOCK_BIN" --listen "127.0.0.1:$MOCK_PORT" --workers 1 >"$WORK/mock.log" 2>&1 &
    MOCK_PID=$!
    PIDS+=("$MOCK_PID")
    wait_up mock "$MOCK_PID" "$WORK/mock.log" -X POST -d '{}' "http://127.0.0.1:$MOCK_PORT/v1/messages"
    log "mock upstream on 127.0.0.1:$MOCK_PORT (pid $MOCK_PID)"
}

start_nginx() {
    NGINX_PORT=$(free_port)
    local dir=$WORK/nginx
    mkdir -p "$dir/tmp"
    # One worker, upstream keepalive, HTTP/1.1 upstream with Connection cleared: the standard
    # way to run nginx as a reverse proxy. keepalive_requests is raised on both sides so nginx
    # does not spend the run reconnecting (sluice never closes a keep-alive connection either).
    cat >"$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
user root;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_requests 1000000;
    upstream mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    "$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_up nginx "$NGINX_PID" "$dir/error.log" -X POST -d '{}' "http://127.0.0.1:$NGINX_PORT/v1/messages"
    log "nginx on 127.0.0.1:$NGINX_PORT (pid $NGINX_PID)"
}

start_sluice() {
    SLUICE_PORT=$(free_port)
    cat >"$WORK/sluice.toml" <<EOF
listen = "127.0.0.1:$SLUICE_PORT"
workers = 1
shutdown_grace_s = 2

[[routes]]
prefix = "/anthropic"
upstream = "http://127.0.0.1:$MOCK_PORT"
protocol = "anthropic"
credential_policy = "client_first"

[stats]
state_file = ""
${BENCH_SLUICE_EXTRA:-}
EOF
    # No server key (the benchmark must never touch a real credential), and none of the
    # caller's SLUICE_* variables (overrides, admin token) may change what is measured.
    local unset=(-u ANTHROPIC_API_KEY) var
    for var in $(compgen -e | grep '^SLUICE' || true); do unset+=(-u "$var"); done
    (cd "$WORK" && exec env "${unset[@]}" "$SLUICE_BIN" --settings "$WORK/sluice.toml") \
        >"$WORK/sluice.log" 2>&1 &
    SLUICE_PID=$!
    PIDS+=("$SLUICE_PID")
    wait_up sluice "$SLUICE_PID" "$WORK/sluice.log" "http://127.0.0.1:$SLUICE_PORT/healthz"
    log "sluice on 127.0.0.1:$SLUICE_PORT (pid $SLUICE_PID)"
}

url_of() {
    case $1 in
        direct) echo "http://127.0.0.1:$MOCK_PORT/v1/messages" ;;
        nginx) echo "http://127.0.0.1:$NGINX_PORT/v1/messages" ;;
        sluice) echo "http://127.0.0.1:$SLUICE_PORT/anthropic/v1/messages" ;;
    esac
}

# Put the server under test alone on SUT_CPU, everything else on HARNESS_CPU
# ("none": everything on HARNESS_CPU).
arrange_cpus() {
    local target=$1
    pin "$MOCK_PID" "$HARNESS_CPU"
    has_target nginx && pin "$NGINX_PID" "$HARNESS_CPU"
    has_target sluice && pin "$SLUICE_PID" "$HARNESS_CPU"
    case $target in
        direct) pin "$MOCK_PID" "$SUT_CPU" ;;
        nginx) pin "$NGINX_PID" "$SUT_CPU" ;;
        sluice) pin "$SLUICE_PID" "$SUT_CPU" ;;
    esac
}

write_wrk_script() {
    # A small Messages request; done() prints one parseable line (latencies in µs).
    cat >"$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}'
wrk.headers["content-type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = "$API_KEY"
done = function(s, latency, requests)
    local e = s.errors
    io.write(string.format("RESULT %.1f %d %d %d %d\n", s.requests / (s.duration / 1e6),
        latency:percentile(50), latency:percentile(99),
        e.connect + e.read + e.write + e.timeout, e.status))
end
EOF
}

# wrk_once TARGET SECONDS: one wrk run; prints "rps p50_us p99_us socket_errors non2xx".
wrk_once() {
    local target=$1 seconds=$2 out
    out=$(on_cpu "$HARNESS_CPU" timeout $((seconds + 30)) \
        wrk -t1 -c"$CONNECTIONS" -d"${seconds}s" --timeout 2s -s "$WORK/post.lua" "$(url_of "$target")") \
        || die "wrk against $target failed: $out"
    echo "$out" >>"$WORK/wrk-$target.log"
    awk '$1 == "RESULT" { print $2, $3, $4, $5, $6 }' <<<"$out"
}

measure_throughput() {
    local round target before after line
    mkdir -p "$WORK/tp"
    for round in $(seq 1 "$ROUNDS"); do
        for target in $TARGETS; do
            arrange_cpus "$target"
            wrk_once "$target" "$WARMUP" >/dev/null
            before="$(cpu_ticks "$SUT_CPU");$(cpu_ticks "$HARNESS_CPU")"
            line=$(wrk_once "$target" "$DURATION")
            after="$(cpu_ticks "$SUT_CPU");$(cpu_ticks "$HARNESS_CPU")"
            line+=" $(busy_percent "${before%;*}" "${after%;*}") $(busy_percent "${before#*;}" "${after#*;}")"
            echo "$line" >>"$WORK/tp/$target"
            log "round $round/$ROUNDS $target: $(awk '{ printf "%.0f req/s, p50 %d µs, p99 %d µs, errors %d+%d", $1, $2, $3, $4, $5 }' <<<"$line")"
        done
    done
}

# tp TARGET FIELD: median of one column over the rounds (1 rps, 2 p50, 3 p99, 4+5 errors,
# 6 server core busy %, 7 harness core busy %).
tp() {
    local target=$1 field=$2
    [[ -s $WORK/tp/$target ]] || { echo nan; return; }
    if [[ $field == errors ]]; then
        # Summed, not a median: one failed request in any round counts.
        awk '{ s += $4 + $5 } END { print s }' "$WORK/tp/$target"
    else
        awk -v f="$field" '{ print $f }' "$WORK/tp/$target" | median
    fi
}

# run_streams LABEL TARGET COUNT EVENTS INTERVAL_MS RAMP_MS: stream_load against TARGET while
# sampling the server's peak RSS; leaves $WORK/streams/LABEL.json and .peak_kb.
run_streams() {
    local label=$1 target=$2 count=$3 events=$4 interval=$5 ramp=$6 pid sampler rc=0
    mkdir -p "$WORK/streams"
    # The mock and stream_load stay on the harness core in both runs, so the only difference
    # between "direct" and "sluice" is sluice's hop (on its own core).
    if [[ $target == direct ]]; then arrange_cpus none; else arrange_cpus "$target"; fi
    case $target in direct) pid=$MOCK_PID ;; sluice) pid=$SLUICE_PID ;; esac
    echo 0 >"$WORK/streams/$label.peak_kb"
    sample_peak_rss "$pid" "$WORK/streams/$label.peak_kb" &
    sampler=$!
    PIDS+=("$sampler")
    log "$label: $count concurrent streams to $target, $events events ${interval} ms apart"
    on_cpu "$HARNESS_CPU" timeout $(((ramp + events * interval) / 1000 + 120)) \
        "$LOAD_BIN" --url "$(url_of "$target")" --streams "$count" --events "$events" \
        --interval-ms "$interval" --ramp-ms "$ramp" --header "x-api-key: $API_KEY" \
        >"$WORK/streams/$label.json" 2>"$WORK/streams/$label.err" || rc=$?
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    if [[ ! -s $WORK/streams/$label.json ]]; then
        cat "$WORK/streams/$label.err" >&2
        die "stream_load ($label) produced no report (exit $rc)"
    fi
    log "$label: $(jq -c '{ok, failed, max_concurrent, latency_us, errors}' "$WORK/streams/$label.json")"
    if [[ $(st "$label" .failed) != 0 ]]; then
        log "$label: first failures: $(jq -c .error_samples "$WORK/streams/$label.json")"
    fi
}

# st LABEL JQ-EXPR: a field of a stream report.
st() { jq -r "$2" "$WORK/streams/$1.json" 2>/dev/null || echo nan; }

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
        printf '| requests/s | %s | %s | %s | %s | ≥ 1.0× | %s |\n' "$(count "$(tp direct 1)")" "$(count "$rps_n")" "$(count "$rps_s")" \
            "$(ratio "$rps_s" "$rps_n")" "$(pass_if "$rps_s >= $rps_n && $rps_s > 0")"
        printf '| latency p50 | %s | %s | %s | %s | | |\n' "$(ms "$(tp direct 2)")" "$(ms "$p50_n")" "$(ms "$p50_s")" "$(ratio "$p50_s" "$p50_n")"
        printf '| latency p99 | %s | %s | %s | %s | ≤ 1.2× | %s |\n' "$(ms "$(tp direct 3)")" "$(ms "$p99_n")" "$(ms "$p99_s")" \
            "$(ratio "$p99_s" "$p99_n")" "$(pass_if "$p99_n > 0 && $p99_s > 0 && $p99_s <= 1.2 * $p99_n")"
        printf '| errors (all rounds) | %s | %s | %s | | 0 | %s |\n' "$(tp direct errors)" "$(tp nginx errors)" "$(tp sluice errors)" \
            "$(pass_if "$(tp sluice errors) == 0")"
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
    decide_pinning
    check_quiet
    write_wrk_script

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
        OVERHEAD_P50_US=$(curl -fsS --max-time 5 "http://127.0.0.1:$SLUICE_PORT/stats" \
            | jq -r '.latency_ms.overhead.p50 // empty | . * 1000' 2>/dev/null || true)
        OVERHEAD_P50_US=${OVERHEAD_P50_US:-nan}
    fi
    has_target nginx && NGINX_RSS_AFTER_TP=$(rss_kb "$NGINX_PID")

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
