#!/usr/bin/env bash
# Checks sluice's /metrics with the real Prometheus tool: starts a tiny mock upstream (Python
# stdlib, serving the Anthropic fixtures), sluice in front of it, sends a mix of requests, and
# runs `promtool check metrics` on what /metrics serves. Needs promtool (Debian: prometheus).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v promtool >/dev/null || { echo "promtool not found (apt-get install prometheus)" >&2; exit 1; }
SLUICE_BIN=${SLUICE_BIN:-target/debug/sluice}
[ -x "$SLUICE_BIN" ] || cargo build --quiet
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# Mock upstream: a JSON answer, an SSE answer, or a 429, chosen by path.
cat > "$work/mock.py" <<'PY'
import http.server, pathlib, sys
fixtures = pathlib.Path(sys.argv[1])
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.endswith("/stream"):
            body, ctype, status = (fixtures / "stream-text.sse").read_bytes(), "text/event-stream", 200
        elif self.path.endswith("/limited"):
            body, ctype, status = b'{"type":"error","error":{"type":"rate_limit_error","message":"x"}}', "application/json", 429
        else:
            body, ctype, status = (fixtures / "message.json").read_bytes(), "application/json", 200
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        if status == 429:
            self.send_header("retry-after", "30")
        self.end_headers()
        self.wfile.write(body)
with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
    print(server.server_address[1], flush=True)
    server.serve_forever()
PY
python3 "$work/mock.py" tests/fixtures/anthropic > "$work/mock.port" &
pids+=($!)
for _ in $(seq 50); do [ -s "$work/mock.port" ] && break; sleep 0.1; done
mock_port=$(cat "$work/mock.port")

cat > "$work/sluice.toml" <<TOML
listen = "127.0.0.1:0"
[[routes]]
prefix = "/anthropic"
upstream = "http://127.0.0.1:$mock_port"
[stats]
state_file = ""
[store]
path = ""
TOML
"$SLUICE_BIN" --settings "$work/sluice.toml" 2> "$work/sluice.log" &
pids+=($!)
for _ in $(seq 100); do grep -q "addr=" "$work/sluice.log" 2>/dev/null && break; sleep 0.1; done
addr=$(grep -o 'addr=127.0.0.1:[0-9]*' "$work/sluice.log" | head -1 | cut -d= -f2)

for path in v1/messages v1/messages/stream v1/messages/limited v1/messages; do
  curl -s -o /dev/null -X POST -H 'content-type: application/json' \
    -H 'x-api-key: sk-ant-api03-test-metrics' -d '{"model":"claude-sonnet-4-5"}' \
    "http://$addr/anthropic/$path"
done
curl -s -o /dev/null "http://$addr/nowhere"
sleep 0.5
curl -sf "http://$addr/metrics" > "$work/metrics.txt"
grep -q 'sluice_requests_total{' "$work/metrics.txt" || { echo "no request counters in /metrics" >&2; cat "$work/metrics.txt" >&2; exit 1; }
echo "promtool check metrics on $(wc -l < "$work/metrics.txt") lines of /metrics:"
promtool check metrics < "$work/metrics.txt"
echo "promtool: ok"
