#!/usr/bin/env python3
"""A mock of the upstreams Codex CLI talks to, on 127.0.0.1 only.

Listeners in one process:
  --api-port      the OpenAI API (`https://api.openai.com/v1`): API-key traffic
  --chatgpt-port  the ChatGPT backend (`https://chatgpt.com/backend-api/codex`): ChatGPT-login
                  traffic
  --backend-port  (optional) where Codex's `chatgpt_base_url` points: its non-inference calls
                  (workspace check, plugins, analytics) and token refreshes, kept apart from
                  the inference traffic; everything there is logged and answered 404

The first two answer the Responses API the way Codex reads it: `POST {base}/responses` with an SSE stream,
and `GET {base}/responses` with `upgrade: websocket`, where every `response.create` text frame
is answered with the same events, one JSON text frame each. A `response.create` with
`"generate": false` (Codex's prewarm) gets `response.created` + `response.completed` with no
output and no usage. `response.completed` carries usage; the ChatGPT listener also sends the
`x-codex-primary-*` / `x-codex-secondary-*` headers and, on the socket, a `codex.rate_limits`
event (a little more used than the headers said); the API listener sends `x-ratelimit-*` headers.

Every request is logged as one JSON line to --log: listener, method, path, query, the headers
in the order received (values of credential headers replaced by `sha256:<hex>` so the log holds
no secret), whether the body was zstd/gzip, the body's sha256 (as received, still compressed)
and the decompressed body's top-level keys, model and stream flag. WebSocket upgrades log the
handshake the same way; each client frame logs its type, `generate`, keys and model.

Credentials: the API listener accepts `authorization: Bearer <--api-key>` (any one given), the ChatGPT
listener `authorization: Bearer <--chatgpt-token>` together with `chatgpt-account-id: <--account-id>`;
anything else gets a 401 in OpenAI's error shape (and is logged).

Token refresh: `POST /oauth/token` on either listener (point CODEX_REFRESH_TOKEN_URL_OVERRIDE at
it) is logged as `refresh` and refused, so a test sees any refresh attempt.
"""

import argparse
import asyncio
import gzip
import hashlib
import json
import signal
import sys
import time

import zstandard
from aiohttp import WSMsgType, web

SECRET_HEADERS = {"authorization", "x-api-key", "api-key", "x-sluice-key", "cookie"}
MAX_BODY = 64 * 1024 * 1024


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def header_list(request: web.BaseRequest):
    out = []
    for name, value in request.raw_headers:
        name = name.decode("latin-1").lower()
        value = value.decode("latin-1")
        if name in SECRET_HEADERS:
            value = sha(value.encode("latin-1"))
        out.append([name, value])
    return out


def decode_body(raw: bytes, encoding: str):
    encoding = (encoding or "").strip().lower()
    if encoding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    if encoding == "gzip":
        return gzip.decompress(raw)
    return raw


def describe_json(data: bytes):
    try:
        doc = json.loads(data)
    except ValueError:
        return {"json": False}
    if not isinstance(doc, dict):
        return {"json": True, "keys": None}
    return {
        "json": True,
        "keys": sorted(doc.keys()),
        "model": doc.get("model"),
        "stream": doc.get("stream"),
        "type": doc.get("type"),
        "generate": doc.get("generate"),
    }


class Mock:
    def __init__(self, args):
        self.args = args
        self.log_file = open(args.log, "a", buffering=1)
        self.counter = 0

    def log(self, entry):
        entry["t"] = round(time.time(), 3)
        self.log_file.write(json.dumps(entry, sort_keys=True) + "\n")

    def next_id(self):
        self.counter += 1
        return f"resp_mock{self.counter:04d}"

    # ---- what each listener accepts and sends ----
    def authorized(self, listener, request):
        auth = request.headers.get("authorization", "")
        if listener == "api":
            return auth in [f"Bearer {key}" for key in self.args.api_key]
        return (
            auth == f"Bearer {self.args.chatgpt_token}"
            and request.headers.get("chatgpt-account-id") == self.args.account_id
        )

    def plan_headers(self, listener):
        now = int(time.time())
        if listener == "chatgpt":
            return {
                "x-codex-primary-used-percent": str(self.args.primary_used),
                "x-codex-primary-window-minutes": "300",
                "x-codex-primary-reset-at": str(now + 3600),
                "x-codex-secondary-used-percent": str(self.args.secondary_used),
                "x-codex-secondary-window-minutes": "10080",
                "x-codex-secondary-reset-at": str(now + 5 * 86400),
            }
        return {
            "x-ratelimit-limit-requests": "5000",
            "x-ratelimit-remaining-requests": "4999",
            "x-ratelimit-reset-requests": "12ms",
            "x-ratelimit-limit-tokens": "2000000",
            "x-ratelimit-remaining-tokens": "1999000",
            "x-ratelimit-reset-tokens": "30ms",
        }

    def rate_limits_event(self):
        now = int(time.time())
        return {
            "type": "codex.rate_limits",
            "plan_type": "plus",
            "rate_limits": {
                "primary": {"used_percent": self.args.event_primary_used, "window_minutes": 300,
                            "reset_at": now + 3600},
                "secondary": {"used_percent": self.args.event_secondary_used,
                              "window_minutes": 10080, "reset_at": now + 5 * 86400},
            },
        }

    def response_events(self, model, generate=True):
        rid = self.next_id()
        base = {"id": rid, "object": "response", "created_at": int(time.time()), "model": model,
                "status": "in_progress", "output": []}
        events = [{"type": "response.created", "sequence_number": 0, "response": base}]
        if not generate:
            done = dict(base, status="completed")
            events.append({"type": "response.completed", "sequence_number": 1, "response": done})
            return events
        text = self.args.reply
        item_id = "msg_" + rid
        item = {"id": item_id, "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}
        events += [
            {"type": "response.output_item.added", "output_index": 0,
             "item": dict(item, status="in_progress", content=[])},
            {"type": "response.output_text.delta", "item_id": item_id, "output_index": 0,
             "content_index": 0, "delta": text},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
        ]
        usage = {
            "input_tokens": self.args.input_tokens,
            "input_tokens_details": {"cached_tokens": self.args.cached_tokens},
            "output_tokens": self.args.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.args.reasoning_tokens},
            "total_tokens": self.args.input_tokens + self.args.output_tokens,
        }
        done = dict(base, status="completed", output=[item], usage=usage)
        events.append({"type": "response.completed", "response": done})
        for n, event in enumerate(events):
            event["sequence_number"] = n
        return events

    def refusal(self):
        headers = {"x-sluice-error": "quota_exceeded"}
        if self.args.refuse_retry_after:
            headers["retry-after"] = self.args.refuse_retry_after
        for extra in self.args.refuse_header:
            name, _, value = extra.partition("=")
            headers[name] = value
        return {"type": "error", "status": self.args.refuse_status,
                "error": {"type": self.args.refuse_type, "code": "quota_exceeded",
                          "message": "sluice: quota test reached for alice", "param": None},
                "headers": headers}

    def error(self, status, code, message):
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                          "code": code}}
        return web.json_response(body, status=status)

    # ---- handlers ----
    async def handle(self, listener, request: web.BaseRequest):
        path = request.path
        entry = {"listener": listener, "method": request.method, "path": path,
                 "query": request.query_string, "headers": header_list(request)}
        upgrade = request.headers.get("upgrade", "").lower() == "websocket"
        if upgrade:
            return await self.websocket(listener, request, entry)
        # read(n) returns whatever has arrived, up to n bytes: a body that comes in two pieces
        # (a loaded machine) must be read on to its end, not parsed from its first piece.
        raw = bytearray()
        while len(raw) <= MAX_BODY:
            piece = await request.content.read(1024 * 1024)
            if not piece:
                break
            raw += piece
        raw = bytes(raw)
        encoding = request.headers.get("content-encoding", "")
        entry["body_len"] = len(raw)
        entry["body_sha256"] = sha(raw)
        entry["body_encoding"] = encoding or None
        body = b""
        if raw:
            try:
                body = decode_body(raw, encoding)
                entry["body"] = describe_json(body)
            except Exception as err:  # noqa: BLE001 - any bad body is logged, not fatal
                entry["body"] = {"decode_error": str(err)}
        if path.endswith("/oauth/token"):
            entry["kind"] = "refresh"
            self.log(entry)
            return self.error(400, "refresh_refused", "mock: no token refresh here")
        if listener == "backend":
            entry["kind"] = "backend"
            entry["status"] = 404
            self.log(entry)
            return self.error(404, "not_found", f"mock: nothing at {path}")
        entry["kind"] = "http"
        if not self.authorized(listener, request):
            entry["status"] = 401
            self.log(entry)
            return self.error(401, "invalid_api_key", "mock: unknown credential")
        if request.method == "POST" and path.endswith("/responses"):
            if self.args.refuse:
                entry["status"] = 429
                self.log(entry)
                refusal = self.refusal()
                return web.json_response({"error": refusal["error"]}, status=refusal["status"],
                                         headers=refusal["headers"])
            try:
                doc = json.loads(body)
            except ValueError:
                entry["status"] = 400
                self.log(entry)
                return self.error(400, "bad_json", "mock: body is not JSON")
            entry["status"] = 200
            self.log(entry)
            return await self.sse(listener, request, doc.get("model") or "gpt-mock")
        entry["status"] = 404
        self.log(entry)
        return self.error(404, "not_found", f"mock: nothing at {path}")

    async def sse(self, listener, request, model):
        headers = {"content-type": "text/event-stream", "openai-model": model,
                   "x-request-id": "req_mock", **self.plan_headers(listener)}
        resp = web.StreamResponse(status=200, headers=headers)
        await resp.prepare(request)
        for event in self.response_events(model):
            data = json.dumps(event)
            await resp.write(f"event: {event['type']}\ndata: {data}\n\n".encode())
        await resp.write_eof()
        return resp

    async def websocket(self, listener, request, entry):
        entry["kind"] = "ws_open"
        if self.args.no_websocket:
            entry["status"] = 404
            self.log(entry)
            return self.error(404, "not_found", "mock: no websocket here")
        if not self.authorized(listener, request):
            entry["status"] = 401
            self.log(entry)
            return self.error(401, "invalid_api_key", "mock: unknown credential")
        extra = {"x-request-id": "req_mock_ws", **self.plan_headers(listener)}
        # compress=False: the mock never agrees to permessage-deflate, so the frames on the wire
        # are the plain JSON (a proxy in between sees them as they are).
        ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_BODY)
        ws.headers.update(extra)
        await ws.prepare(request)
        entry["status"] = 101
        self.log(entry)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                self.log({"listener": listener, "kind": "ws_frame", "frame": str(msg.type)})
                continue
            info = describe_json(msg.data.encode())
            self.log({"listener": listener, "kind": "ws_frame", "frame": "text",
                      "len": len(msg.data), "sha256": sha(msg.data.encode()), "body": info})
            if info.get("type") != "response.create":
                continue
            generate = info.get("generate") is not False
            if self.args.refuse and generate:
                await ws.send_str(json.dumps(self.refusal()))
                continue
            if listener == "chatgpt" and generate:
                await ws.send_str(json.dumps(self.rate_limits_event()))
            for event in self.response_events(info.get("model") or "gpt-mock", generate):
                await ws.send_str(json.dumps(event))
        self.log({"listener": listener, "kind": "ws_close", "code": ws.close_code})
        return ws


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api-port", type=int, required=True)
    parser.add_argument("--chatgpt-port", type=int, required=True)
    parser.add_argument("--backend-port", type=int)
    parser.add_argument("--log", required=True)
    parser.add_argument("--api-key", action="append", required=True,
                        help="a key the API listener accepts (repeat for more)")
    parser.add_argument("--chatgpt-token", required=True, help="the access token auth.json holds")
    parser.add_argument("--account-id", default="acct-test-0001")
    parser.add_argument("--no-websocket", action="store_true",
                        help="answer WebSocket upgrades with 404 (Codex falls back to HTTPS)")
    parser.add_argument("--refuse", action="store_true",
                        help="refuse every turn with 429 the way sluice refuses a quota: the HTTP "
                             "error body, or the error event on the socket")
    parser.add_argument("--refuse-status", type=int, default=429)
    parser.add_argument("--refuse-type", default="rate_limit_error")
    parser.add_argument("--refuse-retry-after", default="")
    parser.add_argument("--refuse-header", action="append", default=[],
                        help="NAME=VALUE: one more header on the refusal")
    parser.add_argument("--reply", default="pong from the mock")
    parser.add_argument("--input-tokens", type=int, default=1200)
    parser.add_argument("--cached-tokens", type=int, default=200)
    parser.add_argument("--output-tokens", type=int, default=30)
    parser.add_argument("--reasoning-tokens", type=int, default=10)
    parser.add_argument("--primary-used", type=float, default=42.0)
    parser.add_argument("--secondary-used", type=float, default=7.5)
    # The socket's codex.rate_limits event reports a little more than the upgrade's headers,
    # so a test can tell which one it read.
    parser.add_argument("--event-primary-used", type=float, default=43.5)
    parser.add_argument("--event-secondary-used", type=float, default=8.0)
    args = parser.parse_args()
    mock = Mock(args)

    runners = []
    listeners = [("api", args.api_port), ("chatgpt", args.chatgpt_port)]
    if args.backend_port:
        listeners.append(("backend", args.backend_port))
    for listener, port in listeners:
        server = web.Server(lambda request, listener=listener: mock.handle(listener, request),
                            auto_decompress=False)
        runner = web.ServerRunner(server)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
    print(f"mock: api on 127.0.0.1:{args.api_port}, chatgpt on 127.0.0.1:{args.chatgpt_port}",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
