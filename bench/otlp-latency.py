#!/usr/bin/env python3
"""bench/otlp-latency.py — does OpenTelemetry export cost requests anything when the collector
is down or hangs? Runs the sluice binary (SLUICE_BIN, default target/debug/sluice) in front of
scripts/e2e/mock_anthropic.py in four runs — no [otlp]; [otlp] with traces to a collector that
accepts; one that refuses connections; one that accepts and never answers — sends the same
requests to each (one keep-alive client, sequential, after a warm-up) and prints per run: p50,
p99 and max latency, RSS before and after, and /stats otlp.

Latency on a shared machine is noise-bound: compare runs made back to back, and read p99 against
the spread between runs, not as an absolute. Stdlib only. Usage:
    bench/otlp-latency.py [--requests 2000] [--runs none,accepting,refused,hanging]
"""

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "hi"}]})


class Accepting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()


def accepting_collector():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Accepting)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def hanging_collector():
    """Accepts connections, reads, never answers (the sockets are kept open)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held = []

    def run():
        while True:
            conn, _ = listener.accept()
            held.append(conn)

    threading.Thread(target=run, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}"


def refused_collector():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start_sluice(binary, work, mock, otlp):
    settings = os.path.join(work, "sluice.toml")
    with open(settings, "w") as f:
        f.write(f"""listen = "127.0.0.1:0"
workers = 1
shutdown_grace_s = 2
[[routes]]
prefix = "/anthropic"
upstream = "{mock}"
server_key_env = "BENCH_SERVER_KEY"
[stats]
state_file = ""
[store]
path = ""
""")
        if otlp:
            f.write(f'[otlp]\nendpoint = "{otlp}"\ninterval_s = 1\ntraces = true\n')
    log = open(os.path.join(work, "sluice.log"), "w+")
    env = {"PATH": os.environ["PATH"], "RUST_LOG": "warn,sluice::server=info",
           "BENCH_SERVER_KEY": "sk-ant-api03-bench"}
    proc = subprocess.Popen([binary, "--settings", settings], stderr=log, env=env)
    deadline = time.time() + 30
    while time.time() < deadline:
        log.seek(0)
        text = log.read()
        if "listening addr=" in text:
            port = int(text.split("listening addr=127.0.0.1:")[1].split()[0])
            return proc, port
        time.sleep(0.1)
    proc.kill()
    sys.exit(f"sluice did not start:\n{text}")


def run(binary, mock, name, otlp, requests):
    with tempfile.TemporaryDirectory() as work:
        proc, port = start_sluice(binary, work, mock, otlp)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            headers = {"content-type": "application/json"}

            def one():
                start = time.perf_counter()
                conn.request("POST", "/anthropic/v1/messages", BODY, headers)
                answer = conn.getresponse()
                answer.read()
                assert answer.status == 200, answer.status
                return time.perf_counter() - start

            for _ in range(100):
                one()
            rss_before = rss_kib(proc.pid)
            times = sorted(one() for _ in range(requests))
            time.sleep(2)  # let the exporter try (and fail) a few times more
            rss_after = rss_kib(proc.pid)
            conn.request("GET", "/stats")
            answer = conn.getresponse()
            body = answer.read()
            otlp_status = json.loads(body).get("otlp") if answer.status == 200 else None
            pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000
            return {"run": name, "p50_ms": round(pick(0.50), 2), "p99_ms": round(pick(0.99), 2),
                    "max_ms": round(times[-1] * 1000, 2), "rss_before_kib": rss_before,
                    "rss_after_kib": rss_after, "otlp": otlp_status}
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--runs", default="none,accepting,refused,hanging")
    args = ap.parse_args()
    binary = os.environ.get("SLUICE_BIN", os.path.join(ROOT, "target/debug/sluice"))
    mock_proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "scripts/e2e/mock_anthropic.py")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    mock = f"http://127.0.0.1:{mock_proc.stdout.readline().strip()}"
    collectors = {"none": lambda: None, "accepting": accepting_collector,
                  "refused": refused_collector, "hanging": hanging_collector}
    try:
        for name in args.runs.split(","):
            result = run(binary, mock, name, collectors[name](), args.requests)
            print(json.dumps(result), flush=True)
    finally:
        mock_proc.terminate()


if __name__ == "__main__":
    main()
