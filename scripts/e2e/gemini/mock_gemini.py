#!/usr/bin/env python3
"""A mock Gemini API upstream (and Code Assist, Gemini CLI's Google-login backend) for the
end-to-end tests (scripts/e2e.sh). Python stdlib only.

Gemini API (`/v1beta/models/{model}:{method}`, also `/v1/`):
    :generateContent              -> JSON answer with usageMetadata and modelVersion
    :streamGenerateContent?alt=sse -> three SSE chunks, usageMetadata cumulative
    :countTokens                  -> {"totalTokens": N}
    :embedContent                 -> {"embedding": {"values": [...]}}
    :batchEmbedContents           -> {"embeddings": [{"values": [...]}]}
    GET /v1beta/models[/ID]       -> a model list / one model
    GET /v1beta/batches/ID        -> a done batch (a long-running operation) with two inlined
                                     responses and one error, in `response` and mirrored in
                                     `metadata.output`, as the Batch API returns them
    GET /v1beta/files/ID:download?alt=media (also under /download/) -> a batch's responses
                                     file: JSONL, two `response` lines and one `error` line
Code Assist (`/v1internal:{method}`): the same answers wrapped as {"response": {...}}, and
loadCodeAssist / onboardUser / listExperiments / retrieveUserQuota and other calls answered
with what lets Gemini CLI proceed (empty objects otherwise).

A marker anywhere in the request body picks a special answer: `e2e:429` -> 429 in Google's
error shape.

Tests read back what the mock received:
    GET  /_mock/requests?since=N -> {"next": M, "requests": [...]} with method, path, query
                                    (the `key` parameter's value as its fingerprint), headers
                                    ([name, value] pairs; a credential's value as its
                                    fingerprint "sha256:<16 hex>"), body (text,
                                    first 4 KiB), and the usage the mock answered with
    POST /_mock/reset            -> forget everything received

Run: mock_gemini.py [--port 0] [--log FILE]; prints the port it listens on as its first line.
"""

import argparse
import hashlib
import json
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CREDENTIAL_HEADERS = {"x-goog-api-key", "authorization", "x-api-key", "x-sluice-key"}
TEXT = "Hello from the Gemini mock upstream."
# Token counts per kind of answer, distinct so a test can tell them apart.
USAGE_PLAIN = {"promptTokenCount": 21, "candidatesTokenCount": 9, "totalTokenCount": 60,
               "thoughtsTokenCount": 30}
USAGE_STREAM = [
    {"promptTokenCount": 1200, "totalTokenCount": 1240, "cachedContentTokenCount": 1000,
     "thoughtsTokenCount": 40},
    {"promptTokenCount": 1200, "candidatesTokenCount": 5, "totalTokenCount": 1245,
     "cachedContentTokenCount": 1000, "thoughtsTokenCount": 40},
    {"promptTokenCount": 1200, "candidatesTokenCount": 11, "totalTokenCount": 1251,
     "cachedContentTokenCount": 1000, "thoughtsTokenCount": 40},
]
# A batch's results: (key, usageMetadata) per response, and one error, model gemini-2.5-flash.
BATCH_USAGE = [
    ("request-1", {"promptTokenCount": 120, "candidatesTokenCount": 30, "totalTokenCount": 200,
                   "thoughtsTokenCount": 50}),
    ("request-2", {"promptTokenCount": 900, "candidatesTokenCount": 70, "totalTokenCount": 970,
                   "cachedContentTokenCount": 600}),
]
BATCH_ERROR = {"code": 400, "message": "Request contains an invalid argument.",
               "status": "INVALID_ARGUMENT"}


def batch_response(usage):
    return {"candidates": [{"content": {"role": "model", "parts": [{"text": TEXT}]},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage, "modelVersion": "gemini-2.5-flash"}


def batch_operation(name):
    inlined = [{"response": batch_response(usage), "metadata": {"key": key}}
               for key, usage in BATCH_USAGE]
    inlined.append({"error": BATCH_ERROR, "metadata": {"key": "request-3"}})
    output = {"inlinedResponses": {"inlinedResponses": inlined}}
    return {"name": name, "done": True,
            "metadata": {"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
                         "name": name, "model": "models/gemini-2.5-flash", "displayName": "e2e",
                         "state": "BATCH_STATE_SUCCEEDED", "output": output,
                         "batchStats": {"requestCount": "3", "successfulRequestCount": "2",
                                        "failedRequestCount": "1"}},
            "response": {"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatchOutput",
                         **output}}


def batch_responses_file():
    lines = [{"key": key, "response": batch_response(usage)} for key, usage in BATCH_USAGE]
    lines.insert(1, {"key": "request-3", "error": BATCH_ERROR})
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


class Recorder:
    def __init__(self, log_path):
        self.lock = threading.Lock()
        self.items = []
        self.log = open(log_path, "a", encoding="utf-8") if log_path else None

    def add(self, item):
        with self.lock:
            item["seq"] = len(self.items) + 1
            self.items.append(item)
            if self.log:
                self.log.write(json.dumps(item) + "\n")
                self.log.flush()

    def since(self, n):
        with self.lock:
            return {"next": len(self.items), "requests": self.items[n:]}

    def reset(self):
        with self.lock:
            self.items = []


def fingerprint(secret):
    """Stands in for a credential in the record: which one it was, never the value."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


def redacted_query(query):
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    return [[k, fingerprint(v) if k == "key" else v] for k, v in pairs]


def answer(text, usage, model, finish=True):
    candidate = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = "STOP"
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model,
            "responseId": "mock-response-1"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    recorder = None

    def log_message(self, *args):
        pass

    def _body(self):
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_json(self, status, value, extra=()):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json; charset=UTF-8")
        self.send_header("content-length", str(len(data)))
        for name, val in extra:
            self.send_header(name, val)
        self.end_headers()
        self.wfile.write(data)

    def _send_sse(self, chunks):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            data = ("data: " + json.dumps(chunk, separators=(",", ":")) + "\r\n\r\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def _record(self, body, usage=None, status=200):
        url = urllib.parse.urlsplit(self.path)
        headers = [[k, fingerprint(v) if k.lower() in CREDENTIAL_HEADERS else v]
                   for k, v in self.headers.items()]
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = {}
        request = request if isinstance(request, dict) else {}
        inner = request.get("request") if isinstance(request.get("request"), dict) else {}
        self.recorder.add({
            "method": self.command, "path": url.path, "query": redacted_query(url.query),
            "headers": headers, "body": body[:4096].decode("utf-8", "replace"),
            "status": status, "usage": usage, "body_keys": sorted(request),
            "model": request.get("model"), "session_id": inner.get("session_id"),
        })

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/_mock/requests":
            since = int(dict(urllib.parse.parse_qsl(url.query)).get("since", 0))
            return self._send_json(200, self.recorder.since(since))
        self._record(b"")
        if "/batches/" in url.path:
            return self._send_json(200, batch_operation("batches/" + url.path.rsplit("/", 1)[1]))
        if url.path.endswith(":download") and "/files/" in url.path:
            data = batch_responses_file()
            self.send_response(200)
            self.send_header("content-type", "application/octet-stream")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return None
        if url.path.endswith("/models"):
            return self._send_json(200, {"models": [
                {"name": "models/gemini-2.5-pro"}, {"name": "models/gemini-2.5-flash"}]})
        if "/models/" in url.path:
            return self._send_json(200, {"name": "models/" + url.path.rsplit("/", 1)[1]})
        return self._send_json(200, {})

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        body = self._body()
        if url.path == "/_mock/reset":
            self.recorder.reset()
            return self._send_json(200, {})
        code_assist = "/v1internal" in url.path
        method = url.path.rsplit(":", 1)[-1] if ":" in url.path else ""
        model = "gemini-2.5-flash"
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = {}
        if "/models/" in url.path:
            model = url.path.split("/models/", 1)[1].split(":", 1)[0]
        elif isinstance(request, dict) and isinstance(request.get("model"), str):
            model = request["model"].removeprefix("models/")
        wrap = (lambda a: {"response": a, "traceId": "mock-trace"}) if code_assist else (lambda a: a)

        if b"e2e:429" in body:
            self._record(body, status=429)
            return self._send_json(429, {"error": {
                "code": 429, "message": "Resource has been exhausted (e.g. check quota).",
                "status": "RESOURCE_EXHAUSTED"}}, [("retry-after", "7")])
        if method == "streamGenerateContent":
            chunks = [
                answer("Hello", USAGE_STREAM[0], model, finish=False),
                answer(" from the Gemini", USAGE_STREAM[1], model, finish=False),
                answer(" mock upstream.", USAGE_STREAM[2], model),
            ]
            self._record(body, USAGE_STREAM[-1])
            if dict(urllib.parse.parse_qsl(url.query)).get("alt") == "sse":
                return self._send_sse([wrap(c) for c in chunks])
            return self._send_json(200, [wrap(c) for c in chunks])
        if method == "generateContent":
            self._record(body, USAGE_PLAIN)
            text = TEXT
            config = request.get("generationConfig") or (request.get("request") or {}).get(
                "generationConfig") or {}
            if config.get("responseMimeType") == "application/json" or config.get(
                    "responseJsonSchema") or config.get("responseSchema"):
                # Gemini CLI's routing and next-speaker checks ask for JSON.
                text = json.dumps({"reasoning": "mock", "model_choice": "flash",
                                   "complexity_reasoning": "mock", "complexity_score": 1,
                                   "next_speaker": "user"})
            return self._send_json(200, wrap(answer(text, USAGE_PLAIN, model)))
        if method == "countTokens":
            self._record(body)
            return self._send_json(200, {"totalTokens": 31})
        if method == "embedContent":
            self._record(body)
            return self._send_json(200, {"embedding": {"values": [0.01, -0.02, 0.03]}})
        if method == "batchEmbedContents":
            self._record(body)
            return self._send_json(200, {"embeddings": [{"values": [0.01, -0.02, 0.03]}]})
        # Code Assist's setup calls.
        self._record(body)
        if method == "loadCodeAssist":
            return self._send_json(200, {
                "currentTier": {"id": "standard-tier", "name": "Gemini Code Assist"},
                "allowedTiers": [{"id": "standard-tier", "isDefault": True}],
                "cloudaicompanionProject": "mock-project"})
        if method == "onboardUser":
            return self._send_json(200, {"done": True, "response": {
                "cloudaicompanionProject": {"id": "mock-project"}}})
        return self._send_json(200, {})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log")
    args = parser.parse_args()
    Handler.recorder = Recorder(args.log)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
