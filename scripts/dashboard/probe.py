"""Gives a sluice's subscription panel real state: a mock Anthropic upstream on 127.0.0.1 answers
one request per Claude login sent through that sluice, with the unified rate-limit headers of a
subscription at 42% of its 5-hour window and of one whose limit is reached (a 429). The two
requests carry no tokens and cost nothing; they are appended to the known rows so that the
sums stay exact. Then waits until sluice's store holds every known row.

    python3 scripts/dashboard/probe.py --listen PORT --sluice URL --token T --known known.json

PORT must be the `upstream` port of the sluice's route (`/anthropic`).
"""

import argparse
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = "claude-sonnet-4-5"
# Made-up Claude logins: only their fingerprints reach /stats.
WORKING = "sk-ant-oat01-dashboard-probe-working-0000000000"
LIMITED = "sk-ant-oat01-dashboard-probe-limited-1111111111"


def unified(now, limited):
    at = lambda seconds: str(int(now + seconds))  # noqa: E731
    if limited:
        return {
            "anthropic-ratelimit-unified-status": "rejected",
            "anthropic-ratelimit-unified-5h-status": "rejected",
            "anthropic-ratelimit-unified-5h-utilization": "1.0",
            "anthropic-ratelimit-unified-5h-reset": at(47 * 60),
            "anthropic-ratelimit-unified-7d-status": "allowed",
            "anthropic-ratelimit-unified-7d-utilization": "0.68",
            "anthropic-ratelimit-unified-7d-reset": at(5 * 86400 + 70 * 60),
            "anthropic-ratelimit-unified-representative-claim": "five_hour",
            "retry-after": str(47 * 60),
        }
    return {
        "anthropic-ratelimit-unified-status": "allowed",
        "anthropic-ratelimit-unified-5h-status": "allowed",
        "anthropic-ratelimit-unified-5h-utilization": "0.42",
        "anthropic-ratelimit-unified-5h-reset": at(133 * 60),
        "anthropic-ratelimit-unified-7d-status": "allowed",
        "anthropic-ratelimit-unified-7d-utilization": "0.31",
        "anthropic-ratelimit-unified-7d-reset": at(3 * 86400 + 300 * 60),
        "anthropic-ratelimit-unified-representative-claim": "five_hour",
    }


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", "0")))
        limited = LIMITED in (self.headers.get("authorization") or "")
        if limited:
            status = 429
            body = {"type": "error", "error": {"type": "rate_limit_error", "message": "limit reached"}}
        else:
            status = 200
            body = {"id": "msg_probe", "type": "message", "role": "assistant", "model": MODEL,
                    "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                    "usage": {"input_tokens": 0, "output_tokens": 0}}
        data = json.dumps(body).encode()
        self.send_response(status)
        for name, value in unified(time.time(), limited).items():
            self.send_header(name, value)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def send(sluice, login):
    body = json.dumps({"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(sluice + "/anthropic/v1/messages", data=body, method="POST", headers={
        "authorization": "Bearer " + login, "anthropic-version": "2023-06-01", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as err:
        err.read()
        return err.code


def stored_requests(sluice, token):
    req = urllib.request.Request(sluice + "/usage?group_by=", headers={"authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)["totals"]["requests"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--sluice", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--known", required=True)
    args = parser.parse_args()
    sluice = args.sluice.rstrip("/")

    server = ThreadingHTTPServer(("127.0.0.1", args.listen), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with open(args.known) as f:
        known = json.load(f)
    try:
        for login, want in ((WORKING, 200), (LIMITED, 429)):
            status = send(sluice, login)
            if status != want:
                raise SystemExit("probe through sluice answered %d, expected %d" % (status, want))
            known["rows"].append({
                "finished_ms": int(time.time() * 1000), "model": MODEL, "caller": "", "project": "",
                # Sent by urllib: a client sluice does not name.
                "provider": "anthropic", "client": "other",
                "session": "", "agent": "", "credential": "", "status": status, "outcome": "completed",
                "streamed": False, "input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "web_search_requests": 0, "cost_usd": 0.0,
            })
    finally:
        server.shutdown()
    with open(args.known, "w") as f:
        json.dump(known, f)

    # The store commits in batches: wait (up to 10 s) until it holds every known row. Only a
    # readiness check; the test's expected sums come from the rows.
    deadline = time.monotonic() + 10
    while stored_requests(sluice, args.token) != len(known["rows"]):
        if time.monotonic() > deadline:
            raise SystemExit("sluice's store holds %d rows, the filler and probe made %d" % (
                stored_requests(sluice, args.token), len(known["rows"])))
        time.sleep(0.1)
    print("probe: 2 subscription answers through sluice; the store holds all %d rows" % len(known["rows"]))


if __name__ == "__main__":
    main()
