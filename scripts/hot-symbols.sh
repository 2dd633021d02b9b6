#!/usr/bin/env bash
# scripts/hot-symbols.sh — writes hot-symbols.txt, the order in which the release build links
# sluice's functions (build.rs hands it to the linker): the functions start-up runs first, then
# those requests run, so that the code an idle or lightly used sluice has touched lies together
# instead of being spread over the whole executable (the kernel maps code in 64 KiB windows
# around each page touched, so scattered code costs RSS far beyond its size).
#
# Usage: scripts/hot-symbols.sh [BINARY] [OUT]   (defaults: target/release/sluice, hot-symbols.txt)
# Environment: MOCK_BIN (default: target/release/examples/mock_upstream, built if missing).
#
# Run it on a release build after a toolchain or dependency update, or a large change of the
# request path, and rebuild: symbol names carry hashes that change with those, and a name that no
# longer exists is skipped by the linker (the executable still links and works; only the order,
# and so idle RSS, degrades). bench/rss.sh shows the effect. Needs valgrind (callgrind), curl,
# python3.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$(readlink -f "${1:-$ROOT/target/release/sluice}")
OUT=${2:-$ROOT/hot-symbols.txt}
for tool in valgrind callgrind_control curl python3 nm; do
    command -v "$tool" >/dev/null || { echo "hot-symbols.sh: needs $tool" >&2; exit 1; }
done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sluice-hot.XXXXXX")
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

MOCK_BIN=${MOCK_BIN:-}
if [[ -z $MOCK_BIN ]]; then
    (cd "$ROOT" && cargo build --release --quiet --example mock_upstream)
    MOCK_BIN=$ROOT/target/release/examples/mock_upstream
fi
MOCK_PORT=$(free_port) PORT=$(free_port)
"$MOCK_BIN" --listen "127.0.0.1:$MOCK_PORT" --workers 1 >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
# The settings bench/run.sh uses: one worker, the default SQLite store, Anthropic and OpenAI
# routes to the mock.
cat >"$WORK/sluice.toml" <<EOF
listen = "127.0.0.1:$PORT"
workers = 1

[[routes]]
prefix = "/anthropic"
protocol = "anthropic"
credential_policy = "client_first"
upstream = "http://127.0.0.1:$MOCK_PORT"

[[routes]]
prefix = "/openai/v1"
protocol = "openai"
upstream = "http://127.0.0.1:$MOCK_PORT/v1"

[stats]
state_file = ""
EOF
(cd "$WORK" && exec env -u ANTHROPIC_API_KEY valgrind --tool=callgrind --demangle=no --dump-instr=no \
    --callgrind-out-file="$WORK/callgrind.out" "$BIN" --settings "$WORK/sluice.toml") >"$WORK/sluice.log" 2>&1 &
PIDS+=($!)
SLUICE_PID=$!
for _ in $(seq 1 300); do curl -fs -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.2; done
sleep 2
# First part: start-up (and the first /healthz).
callgrind_control -d "$SLUICE_PID" >/dev/null
post() { # PATH BODY HEADERS...
    local path=$1 body=$2
    shift 2
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT$path" -H 'content-type: application/json' "$@" -d "$body"
}
for _ in 1 2; do
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT/healthz"
    post /anthropic/v1/messages '{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}' \
        -H 'anthropic-version: 2023-06-01' -H 'x-api-key: sk-ant-api03-test-hot-000000000000000000'
    post /anthropic/v1/messages '{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"Hello"}]}' \
        -H 'anthropic-version: 2023-06-01' -H 'x-api-key: sk-ant-api03-test-hot-000000000000000000' \
        -H 'x-mock-events: 3' -H 'x-mock-interval-ms: 0'
    post /openai/v1/responses '{"model":"gpt-5.3-codex","input":"Hello","stream":true}' \
        -H 'authorization: Bearer sk-proj-test-hot-0000000000000000' -H 'x-mock-events: 3' -H 'x-mock-interval-ms: 0'
done
sleep 2
# Second part: what requests ran beyond start-up (and the store's first batch).
callgrind_control -d "$SLUICE_PID" >/dev/null
kill -TERM "$SLUICE_PID"
wait "$SLUICE_PID" || true

python3 - "$BIN" "$OUT" "$WORK"/callgrind.out.* <<'PY'
import re, subprocess, sys
binary, out, dumps = sys.argv[1], sys.argv[2], sorted(sys.argv[3:], key=lambda p: int(p.rsplit(".", 1)[1]))
defined = set()
for line in subprocess.run(["nm", binary], capture_output=True, text=True, check=True).stdout.splitlines():
    parts = line.split()
    if len(parts) == 3 and parts[1] in "tTwW":
        defined.add(parts[2])

def executed(path):
    """Instructions per function of the executable in one callgrind dump."""
    names, objects, cost = {}, {}, {}
    obj = fn = None
    after_calls = False
    for line in open(path, errors="replace"):
        if after_calls:  # the inclusive cost of a call, not the caller's own
            after_calls = False
            continue
        if line.startswith("calls="):
            after_calls = True
            continue
        m = re.match(r"(c?)(ob|fn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if m:
            table = objects if m.group(2) == "ob" else names
            if m.group(4):
                table[m.group(3)] = re.sub(r"'\d+$", "", m.group(4))
            if not m.group(1):
                if m.group(2) == "ob":
                    obj = objects[m.group(3)]
                else:
                    fn = names[m.group(3)]
            continue
        if obj == binary and fn in defined and line[:1] in "0123456789+-*":
            fields = line.split()
            if len(fields) >= 2:
                cost[fn] = cost.get(fn, 0) + int(fields[1])
    return cost

seen, order = set(), []
for dump in dumps:
    cost = executed(dump)
    for name in sorted(cost, key=lambda n: -cost[n]):
        if name not in seen:
            seen.add(name)
            order.append(name)
with open(out, "w") as f:
    f.write("".join(name + "\n" for name in order))
print(f"hot-symbols.sh: {len(order)} functions written to {out}", file=sys.stderr)
PY
