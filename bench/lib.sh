# bench/lib.sh — what the benchmarks share: process plumbing, the mock upstream (plain or
# HTTPS), nginx in front of it, wrk rounds and concurrent SSE streams. Sourced by bench/run.sh
# and bench/tls-upstream.sh, which define TARGETS, url_of, arrange_cpus and pid_of, and set
# ROOT, WORK, QUICK, KEEP, CONNECTIONS, API_KEY, UPSTREAM_TLS and COUNT_UPSTREAM first.

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

# sample_peak_rss PID FILE: write the highest RSS seen (children included) to FILE until killed.
sample_peak_rss() {
    local pid=$1 file=$2 peak=0 rss
    while kill -0 "$pid" 2>/dev/null; do
        rss=$(rss_kb "$pid" 2>/dev/null || echo 0)
        if ((rss > peak)); then peak=$rss; echo "$peak" >"$file"; fi
        sleep 0.05
    done
}

# sample_peak_upstream PID FILE: write the most connections PID (or its children) held open to
# the mock at once to FILE until killed.
sample_peak_upstream() {
    local pid=$1 file=$2 peak=0 open pids
    while kill -0 "$pid" 2>/dev/null; do
        pids=$(echo "$pid" $(children_of "$pid") | sed 's/ /|/g')
        open=$(ss -Htnp state established "( dport = :$MOCK_PORT )" 2>/dev/null | grep -cE "pid=($pids)," || true)
        if ((open > peak)); then peak=$open; echo "$peak" >"$file"; fi
        sleep 0.2
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
# Shared steps
# ---------------------------------------------------------------------------------------------

# parse_options ARGS...: --quick, --out FILE, --keep, --help (the calling script's header).
parse_options() {
    while (($#)); do
        case $1 in
            --quick) QUICK=1 ;;
            --out) OUT=$2; shift ;;
            --keep) KEEP=1 ;;
            -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
            *) die "unknown option $1 (try --help)" ;;
        esac
        shift
    done
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
    if [[ $TARGETS == *sluice* && -z ${SLUICE_BIN:-} ]]; then
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

# Every stream holds a socket in stream_load and two in a proxy (client side, upstream side):
# raise the open-files limit as far as allowed.
raise_fd_limit() {
    local hard
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] && hard=1048576
    ulimit -n "$hard"
    FD_LIMIT=$hard
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

# launch_sluice NAME DIR PORT ROUTE-LINES: sluice with one worker and one /anthropic route (plus
# ROUTE-LINES, e.g. its upstream) listening on PORT, its settings, store and log in DIR; its pid
# in LAUNCHED_PID.
launch_sluice() {
    local name=$1 dir=$2 port=$3 route=$4 var
    cat >"$dir/sluice.toml" <<EOF
listen = "127.0.0.1:$port"
workers = 1
shutdown_grace_s = 2

[[routes]]
prefix = "/anthropic"
protocol = "anthropic"
credential_policy = "client_first"
$route

[stats]
state_file = ""
${BENCH_SLUICE_EXTRA:-}
EOF
    # No server key (the benchmark must never touch a real credential), and none of the
    # caller's SLUICE_* variables (overrides, admin token) may change what is measured.
    local unset=(-u ANTHROPIC_API_KEY)
    for var in $(compgen -e | grep '^SLUICE' || true); do unset+=(-u "$var"); done
    (cd "$dir" && exec env "${unset[@]}" "$SLUICE_BIN" --settings "$dir/sluice.toml") \
        >"$dir/sluice.log" 2>&1 &
    LAUNCHED_PID=$!
    PIDS+=("$LAUNCHED_PID")
    wait_up "$name" "$LAUNCHED_PID" "$dir/sluice.log" "http://127.0.0.1:$port/healthz"
    log "$name on 127.0.0.1:$port (pid $LAUNCHED_PID)"
}

# The mock serves HTTPS when UPSTREAM_TLS=1 (certificates from make_test_ca).
start_mock() {
    MOCK_PORT=$(free_port)
    local tls=() scheme=http check=()
    if ((UPSTREAM_TLS)); then
        tls=(--tls-cert "$WORK/ca/server.crt" --tls-key "$WORK/ca/server.key")
        scheme=https check=(--cacert "$WORK/ca/ca.crt")
    fi
    "$MOCK_BIN" --listen "127.0.0.1:$MOCK_PORT" --workers 1 "${tls[@]}" >"$WORK/mock.log" 2>&1 &
    MOCK_PID=$!
    PIDS+=("$MOCK_PID")
    wait_up mock "$MOCK_PID" "$WORK/mock.log" "${check[@]}" -X POST -d '{}' "$scheme://127.0.0.1:$MOCK_PORT/v1/messages"
    MOCK_URL="$scheme://127.0.0.1:$MOCK_PORT"
    log "mock upstream on $MOCK_URL (pid $MOCK_PID)"
}

# make_test_ca: a CA of the run's own and a certificate for localhost and 127.0.0.1 it signed,
# in $WORK/ca (scripts/test-ca.sh).
make_test_ca() {
    "$ROOT/scripts/test-ca.sh" "$WORK/ca" DNS:localhost,IP:127.0.0.1 || die "could not make the test CA"
}

start_nginx() {
    NGINX_PORT=$(free_port)
    local dir=$WORK/nginx scheme=http tls=""
    # To an HTTPS upstream: its certificate verified against the run's CA, TLS sessions reused.
    if ((UPSTREAM_TLS)); then
        scheme=https
        tls="
            proxy_ssl_trusted_certificate $WORK/ca/ca.crt;
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;"
    fi
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
            proxy_pass $scheme://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";$tls
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

# write_wrk_request FILE BODY NAME=VALUE...: a wrk script POSTing BODY with these headers, whose
# done() prints one parseable line (latencies in µs): "RESULT rps p50 p99 socket_errors non2xx".
write_wrk_request() {
    local file=$1 body=$2 header
    shift 2
    {
        echo 'wrk.method = "POST"'
        echo "wrk.body = '$body'"
        for header in "$@"; do
            echo "wrk.headers[\"${header%%=*}\"] = \"${header#*=}\""
        done
        cat <<'LUA'
done = function(s, latency, requests)
    local e = s.errors
    io.write(string.format("RESULT %.1f %d %d %d %d\n", s.requests / (s.duration / 1e6),
        latency:percentile(50), latency:percentile(99),
        e.connect + e.read + e.write + e.timeout, e.status))
end
LUA
    } >"$WORK/$file"
}

write_wrk_script() { # a small Messages request
    write_wrk_request post.lua \
        '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}' \
        content-type=application/json anthropic-version=2023-06-01 "x-api-key=$API_KEY"
}

# wrk_once TARGET SECONDS [SCRIPT]: one wrk run (the request of SCRIPT, default post.lua);
# prints "rps p50_us p99_us socket_errors non2xx".
wrk_once() {
    local target=$1 seconds=$2 script=${3:-post.lua} out
    out=$(on_cpu "$HARNESS_CPU" timeout $((seconds + 30)) \
        wrk -t1 -c"$CONNECTIONS" -d"${seconds}s" --timeout 2s -s "$WORK/$script" "$(url_of "$target")") \
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
# sampling the server's peak RSS (and with COUNT_UPSTREAM=1 its connections to the mock);
# leaves $WORK/streams/LABEL.json, .peak_kb (and .peak_conns).
run_streams() {
    local label=$1 target=$2 count=$3 events=$4 interval=$5 ramp=$6 pid sampler conns="" rc=0
    mkdir -p "$WORK/streams"
    # The mock and stream_load stay on the harness core in both runs, so the only difference
    # between "direct" and "sluice" is sluice's hop (on its own core).
    if [[ $target == direct ]]; then arrange_cpus none; else arrange_cpus "$target"; fi
    pid=$(pid_of "$target")
    echo 0 >"$WORK/streams/$label.peak_kb"
    sample_peak_rss "$pid" "$WORK/streams/$label.peak_kb" &
    sampler=$!
    PIDS+=("$sampler")
    if ((COUNT_UPSTREAM)); then
        echo 0 >"$WORK/streams/$label.peak_conns"
        sample_peak_upstream "$pid" "$WORK/streams/$label.peak_conns" &
        conns=$!
        PIDS+=("$conns")
    fi
    log "$label: $count concurrent streams to $target, $events events ${interval} ms apart"
    on_cpu "$HARNESS_CPU" timeout $(((ramp + events * interval) / 1000 + 120)) \
        "$LOAD_BIN" --url "$(url_of "$target")" --streams "$count" --events "$events" \
        --interval-ms "$interval" --ramp-ms "$ramp" --header "x-api-key: $API_KEY" \
        >"$WORK/streams/$label.json" 2>"$WORK/streams/$label.err" || rc=$?
    kill "$sampler" $conns 2>/dev/null || true
    wait "$sampler" $conns 2>/dev/null || true
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
