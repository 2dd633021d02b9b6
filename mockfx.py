import http.server, pathlib, sys
fixtures = pathlib.Path("/work/main/tests/fixtures/anthropic")
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        extra = {}
        if self.path.endswith("/stream"):
            body, ctype = (fixtures / "stream-text.sse").read_bytes(), "text/event-stream"
        else:
            body, ctype = (fixtures / "message.json").read_bytes(), "application/json"
            extra = {"anthropic-ratelimit-unified-5h-utilization": "0.42", "anthropic-ratelimit-unified-status": "allowed"}
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        for k, v in extra.items(): self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("127.0.0.1", 18998), Handler).serve_forever()
