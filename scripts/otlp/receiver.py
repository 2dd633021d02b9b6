#!/usr/bin/env python3
"""An OTLP/HTTP protobuf receiver for scripts/otlp-e2e.sh, decoding with the OpenTelemetry
project's own Python message types (the opentelemetry-proto package), not sluice's.

POST /v1/metrics and /v1/traces: decoded and kept (an undecodable body is answered 400 and
counted); each request's header names and content type are kept too.
GET /_received -> {"metrics": [...], "traces": [...], "headers": [...], "undecodable": N}, each
export request as protobuf's own JSON mapping (MessageToDict).

Run: receiver.py [--port 0]; prints the port it listens on as its first line.
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

SIGNALS = {
    "/v1/metrics": ("metrics", ExportMetricsServiceRequest, ExportMetricsServiceResponse),
    "/v1/traces": ("traces", ExportTraceServiceRequest, ExportTraceServiceResponse),
}


class Store:
    lock = threading.Lock()
    received = {"metrics": [], "traces": [], "headers": [], "undecodable": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, content_type):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        signal = SIGNALS.get(self.path)
        if signal is None:
            return self.answer(404, b"unknown signal", "text/plain")
        name, request_type, response_type = signal
        request = request_type()
        try:
            request.ParseFromString(body)
        except Exception:  # noqa: BLE001 - any decoding failure is the finding
            with Store.lock:
                Store.received["undecodable"] += 1
            return self.answer(400, b"undecodable", "text/plain")
        with Store.lock:
            Store.received[name].append(MessageToDict(request))
            Store.received["headers"].append(
                {k.lower(): v for k, v in self.headers.items()})
        self.answer(200, response_type().SerializeToString(), "application/x-protobuf")

    def do_GET(self):
        if self.path != "/_received":
            return self.answer(404, b"", "text/plain")
        with Store.lock:
            body = json.dumps(Store.received).encode()
        self.answer(200, body, "application/json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
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
