#!/usr/bin/env python3
"""A mock Anthropic API upstream for the end-to-end tests (scripts/e2e.sh). Python stdlib only.

Good enough for the official SDKs and Claude Code: HEAD/GET /, POST /v1/messages (JSON or SSE,
text or tool_use), POST /v1/messages/count_tokens, GET /v1/models[/ID], and error answers (429
with retry-after and the unified rate-limit headers, 529 overloaded). Every answer from
/v1/messages carries the subscription-style `anthropic-ratelimit-unified-*` headers, so a proxy in
front can record rate-limit state.

What the answer is, is chosen by a marker anywhere in the request body, so that any client (even
one whose headers we cannot set, like Claude Code's prompt) can select it:
    e2e:tool  -> a tool_use answer (tool "get_weather" with {"city": "Paris"})
    e2e:429   -> 429 rate_limit_error with retry-after and unified headers (rejected)
    e2e:529   -> 529 overloaded_error
    otherwise -> a text answer; streamed when the JSON body has "stream": true

Tests read back what the mock received (not recorded: the /_mock/ paths themselves):
    GET  /_mock/requests?since=N -> {"next": M, "requests": [...]} with seq, method, path, query,
                                    headers (list of [name, value] in arrival order, names as
                                    sent), body_b64, and what the mock answered (status,
                                    headers, usage, whether it was a stream)
    POST /_mock/reset            -> forget everything received

Run: mock_anthropic.py [--port 0] [--log FILE]; prints the port it listens on as its first line.
"""

import argparse
import base64
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TEXT_ANSWER = "Hello from the e2e mock upstream."
MODELS = [
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-01T00:00:00Z"),
    ("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
]
# Token counts the mock reports: distinct per kind of answer so a test can tell them apart.
USAGE_PLAIN = {"input_tokens": 12, "cache_creation_input_tokens": 0,
               "cache_read_input_tokens": 0, "output_tokens": 10}
USAGE_STREAM = {"input_tokens": 849, "cache_creation_input_tokens": 120,
                "cache_read_input_tokens": 3000, "output_tokens": 47}
USAGE_TOOL = {"input_tokens": 410, "cache_creation_input_tokens": 0,
              "cache_read_input_tokens": 0, "output_tokens": 33}
RETRY_AFTER = "7"
RESET = str(int(time.time()) + 3 * 3600)


def unified_headers(rejected=False):
    """The subscription rate-limit headers Anthropic sends (shape of fixtures' ratelimit-429)."""
    status = "rejected" if rejected else "allowed"
    return [
        ("anthropic-ratelimit-unified-status", status),
        ("anthropic-ratelimit-unified-reset", RESET),
        ("anthropic-ratelimit-unified-representative-claim", "five_hour"),
        ("anthropic-ratelimit-unified-5h-status", status),
        ("anthropic-ratelimit-unified-5h-reset", RESET),
        ("anthropic-ratelimit-unified-5h-utilization", "1.01" if rejected else "0.42"),
        ("anthropic-ratelimit-unified-7d-status", "allowed"),
        ("anthropic-ratelimit-unified-7d-reset", str(int(RESET) + 4 * 86400)),
        ("anthropic-ratelimit-unified-7d-utilization", "0.63"),
        ("anthropic-ratelimit-unified-fallback", "available"),
        ("anthropic-ratelimit-unified-overage-status", "rejected"),
    ]


class Recorder:
    def __init__(self, log_path):
        self.lock = threading.Lock()
        self.items = []
        self.seq = 0
        self.log = open(log_path, "a", encoding="utf-8") if log_path else None

    def add(self, item):
        with self.lock:
            self.seq += 1
            item["seq"] = self.seq
            self.items.append(item)
            return item

    def answered(self, item):
        """Log a readable trace line (body shortened) once the answer is known."""
        if self.log:
            short = dict(item)
            short["body_len"] = len(base64.b64decode(short.pop("body_b64")))
            with self.lock:
                self.log.write(json.dumps(short) + "\n")
                self.log.flush()

    def since(self, n):
        with self.lock:
            return self.seq, [i for i in self.items if i["seq"] > n]

    def reset(self):
        with self.lock:
            self.items = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mock-anthropic/1"
    sys_version = ""
    recorder = None  # set in main

    def log_message(self, fmt, *args):  # quiet: the recorder's log is the trace
        pass

    # --- request plumbing -------------------------------------------------------------------

    def read_body(self):
        """Body bytes as sent: content-length or chunked (a proxy may stream it chunked)."""
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            out = bytearray()
            while True:
                size_line = self.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status, body, ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.send_header("request-id", "req_e2e_%06d" % self.item["seq"] if self.item else "req_e2e")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status, obj, extra=()):
        self.send(status, json.dumps(obj).encode(), "application/json", extra)

    def error(self, status, etype, message, extra=()):
        self.send_json(status, {"type": "error", "error": {"type": etype, "message": message},
                                "request_id": "req_e2e_err"}, extra)

    # Remember what we answer with, so tests can compare it with what sluice recorded. It is
    # recorded before any byte of the body goes out: a client that has its whole answer can read
    # back the complete record at once.
    def send_response(self, code, message=None):
        if self.item is not None:
            self.item["answered_status"] = code
        super().send_response(code, message)

    def send_header(self, keyword, value):
        self.sent_headers.append([keyword, value])
        super().send_header(keyword, value)

    def handle_any(self):
        self.item = None
        self.sent_headers = []
        url = urllib.parse.urlsplit(self.path)
        body = self.read_body()
        if url.path.startswith("/_mock/"):
            return self.control(url)
        self.item = self.recorder.add({
            "method": self.command,
            "path": url.path,
            "query": url.query,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_b64": base64.b64encode(body).decode(),
            "answered_usage": None,  # tokens the answer reported (None: no usage in it)
            "answered_status": None,
            "answered_stream": False,
            "answered_headers": self.sent_headers,
        })
        self.route(url, body)
        self.recorder.answered(self.item)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_any

    def control(self, url):
        if url.path == "/_mock/requests":
            since = int(urllib.parse.parse_qs(url.query).get("since", ["0"])[0])
            nxt, items = self.recorder.since(since)
            return self.send_json(200, {"next": nxt, "requests": items})
        if url.path == "/_mock/reset":
            self.recorder.reset()
            return self.send_json(200, {"ok": True})
        return self.error(404, "not_found_error", "unknown control path")

    # --- the API ----------------------------------------------------------------------------

    def route(self, url, body):
        path = url.path.rstrip("/") or "/"
        if path == "/" and self.command in ("HEAD", "GET"):
            self.send(200, b"", "text/plain")
            return 200
        if path == "/v1/messages" and self.command == "POST":
            return self.messages(body)
        if path == "/v1/messages/count_tokens" and self.command == "POST":
            # Roughly a token per 4 bytes: all a client needs is a plausible integer.
            self.send_json(200, {"input_tokens": max(1, len(body) // 4)})
            return 200
        if path == "/v1/models" and self.command == "GET":
            data = [{"type": "model", "id": i, "display_name": n, "created_at": c} for i, n, c in MODELS]
            self.send_json(200, {"data": data, "has_more": False,
                                 "first_id": data[0]["id"], "last_id": data[-1]["id"]})
            return 200
        if path.startswith("/v1/models/") and self.command == "GET":
            mid = path.rsplit("/", 1)[1]
            for i, n, c in MODELS:
                if i == mid:
                    self.send_json(200, {"type": "model", "id": i, "display_name": n, "created_at": c})
                    return 200
        self.error(404, "not_found_error", "mock: no such endpoint %s %s" % (self.command, url.path))
        return 404

    def messages(self, body):
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            self.error(400, "invalid_request_error", "mock: body is not JSON")
            return 400
        model = req.get("model") or "claude-sonnet-4-5-20250929"
        if b"e2e:429" in body:
            self.error(429, "rate_limit_error",
                       "This request would exceed your account's rate limit. Please try again later.",
                       [("retry-after", RETRY_AFTER), ("x-should-retry", "true")] + unified_headers(True))
            return 429
        if b"e2e:529" in body:
            self.error(529, "overloaded_error", "Overloaded")
            return 529
        tool = b"e2e:tool" in body
        usage = dict(USAGE_TOOL if tool else (USAGE_STREAM if req.get("stream") else USAGE_PLAIN))
        self.item["answered_usage"] = usage
        self.item["answered_stream"] = bool(req.get("stream"))
        msg_id = "msg_e2e_%06d" % self.item["seq"]
        if tool:
            content = [{"type": "text", "text": "Let me check the weather."},
                       {"type": "tool_use", "id": "toolu_e2e_%06d" % self.item["seq"],
                        "name": "get_weather", "input": {"city": "Paris"}}]
            stop = "tool_use"
        else:
            content = [{"type": "text", "text": TEXT_ANSWER}]
            stop = "end_turn"
        if not req.get("stream"):
            self.send_json(200, {"id": msg_id, "type": "message", "role": "assistant", "model": model,
                                 "content": content, "stop_reason": stop, "stop_sequence": None,
                                 "usage": dict(usage, service_tier="standard")},
                           unified_headers())
            return 200
        self.stream(msg_id, model, content, stop, usage)
        return 200

    def stream(self, msg_id, model, content, stop, usage):
        """An SSE answer shaped like the API's: chunked, one event per chunk, flushed each."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream; charset=utf-8")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("request-id", "req_e2e_%06d" % self.item["seq"])
        for k, v in unified_headers():
            self.send_header(k, v)
        self.end_headers()

        def event(name, data):
            chunk = ("event: %s\ndata: %s\n\n" % (name, json.dumps(data))).encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
            time.sleep(0.005)  # arrive as separate network reads, as real streams do

        start_usage = dict(usage, output_tokens=1, service_tier="standard")
        event("message_start", {"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": start_usage}})
        for idx, block in enumerate(content):
            if block["type"] == "text":
                event("content_block_start", {"type": "content_block_start", "index": idx,
                                              "content_block": {"type": "text", "text": ""}})
                if idx == 0:
                    event("ping", {"type": "ping"})
                words = block["text"].split(" ")
                for i, w in enumerate(words):
                    piece = w if i == 0 else " " + w
                    event("content_block_delta", {"type": "content_block_delta", "index": idx,
                                                  "delta": {"type": "text_delta", "text": piece}})
            else:
                event("content_block_start", {"type": "content_block_start", "index": idx,
                                              "content_block": {"type": "tool_use", "id": block["id"],
                                                                "name": block["name"], "input": {}}})
                js = json.dumps(block["input"])
                for part in (js[: len(js) // 2], js[len(js) // 2:]):
                    event("content_block_delta", {"type": "content_block_delta", "index": idx,
                                                  "delta": {"type": "input_json_delta", "partial_json": part}})
            event("content_block_stop", {"type": "content_block_stop", "index": idx})
        event("message_delta", {"type": "message_delta",
                                "delta": {"stop_reason": stop, "stop_sequence": None},
                                "usage": {"output_tokens": usage["output_tokens"]}})
        event("message_stop", {"type": "message_stop"})
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", default=None, help="append one JSON line per received request")
    args = ap.parse_args()
    Handler.recorder = Recorder(args.log)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
