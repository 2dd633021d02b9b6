#!/usr/bin/env python3
"""Does sluice count what the official Python SDK counts? For every streamed fixture in
tests/fixtures/anthropic/, a mock upstream replays it, the SDK streams it through sluice with
`client.messages.stream(...)`, and the usage of `get_final_message()` (or, for a stream that an
error event ends, the SDK's snapshot when it raised) — tokens and web searches — must equal what
/stats counted for it.

Run: python3 scripts/e2e/costs_sdk.py   (needs `anthropic` installed, e.g. from
scripts/e2e/requirements.txt; SLUICE_BIN=path to the binary, default target/debug/sluice).
Prints one PASS/FAIL line per fixture and exits 1 on any failure. Only 127.0.0.1 is used.
"""

import http.server
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import anthropic

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "anthropic"
BIN = os.environ.get("SLUICE_BIN", str(ROOT / "target" / "debug" / "sluice"))
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
COUNTED = TOKEN_FIELDS + ("web_search_requests",)


class Replay(http.server.BaseHTTPRequestHandler):
    """Answers POST /v1/messages with the fixture named by the `x-fixture` header."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = (FIXTURES / self.headers["x-fixture"]).read_bytes()
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def totals(base):
    with urllib.request.urlopen(base + "/stats") as answer:
        return json.load(answer)["totals"]


def counted_since(base, before):
    """The /stats totals added since `before`, once the request has been counted."""
    deadline = time.time() + 10
    while True:
        now = totals(base)
        if now["requests"] > before["requests"] or time.time() > deadline:
            return {field: now[field] - before[field] for field in COUNTED + ("requests", "errors")}
        time.sleep(0.05)


def sdk_usage(client, fixture):
    """The SDK's own usage for the streamed fixture, and whether the stream raised."""
    stream = client.messages.stream(
        model="claude-fixture",
        max_tokens=1024,
        messages=[{"role": "user", "content": "replay"}],
        extra_headers={"x-fixture": fixture},
    )
    with stream as events:
        try:
            return events.get_final_message().usage, False
        except anthropic.APIStatusError:
            return events.current_message_snapshot.usage, True


def main():
    mock = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Replay)
    threading.Thread(target=mock.serve_forever, daemon=True).start()
    port = free_port()
    with tempfile.TemporaryDirectory() as scratch:
        settings = pathlib.Path(scratch) / "sluice.toml"
        settings.write_text(
            f'listen = "127.0.0.1:{port}"\n[stats]\nstate_file = ""\n[store]\npath = ""\n'
            f'[[routes]]\nprefix = "/anthropic"\nupstream = "http://127.0.0.1:{mock.server_port}"\n'
        )
        sluice = subprocess.Popen(
            [BIN, "--settings", str(settings)], stderr=subprocess.DEVNULL, cwd=scratch
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(base + "/healthz")
                    break
                except OSError:
                    time.sleep(0.05)
            client = anthropic.Anthropic(base_url=base + "/anthropic", api_key="sk-ant-api03-test-costs-sdk", max_retries=0)
            failed = 0
            for fixture in sorted(p.name for p in FIXTURES.glob("*.sse")):
                before = totals(base)
                usage, raised = sdk_usage(client, fixture)
                counted = counted_since(base, before)
                sdk = {field: getattr(usage, field) or 0 for field in TOKEN_FIELDS}
                tools = getattr(usage, "server_tool_use", None)
                sdk["web_search_requests"] = (tools.web_search_requests if tools else 0) or 0
                ok = (
                    counted["requests"] == 1
                    and all(counted[field] == sdk[field] for field in COUNTED)
                    and counted["errors"] == int(raised)
                )
                failed += not ok
                print(f"{'PASS' if ok else 'FAIL'} {fixture}: sdk {sdk}{' (error event)' if raised else ''}, sluice {counted}")
            print(f"sdk {anthropic.__version__}: {failed} failed")
            return 1 if failed else 0
        finally:
            sluice.terminate()
            sluice.wait(timeout=20)
            mock.shutdown()


if __name__ == "__main__":
    sys.exit(main())
