"""A stand-in sluice for the dashboard's browser test: serves the dashboard files exactly as
src/dashboard.rs embeds them (same paths, content types and headers) and answers /usage and
/stats from a fixed list of requests, behind an admin token when one is given.

Run it by hand to look at the page:  python3 scripts/dashboard/fake_sluice.py --port 8080
"""

import argparse
import json
import random
import re
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[2]

# USD per million tokens: input, output, cache write, cache read.
PRICES = {
    "claude-opus-4-5": (5.0, 25.0, 6.25, 0.50),
    "claude-sonnet-4-5": (3.0, 15.0, 3.75, 0.30),
    "claude-haiku-4-5": (1.0, 5.0, 1.25, 0.10),
}
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
COUNTER_FIELDS = ("requests", "errors", "streamed", "incomplete") + TOKEN_FIELDS + ("web_search_requests",)


def dashboard_files():
    """(path -> (content type, file)) and the headers, read from src/dashboard.rs itself."""
    source = (REPO / "src" / "dashboard.rs").read_text()
    types = dict(re.findall(r'const (\w+): &str = "([^"]+)";', source))
    files = {}
    for name, ctype, rel in re.findall(
        r'\(\s*"([^"]*)",\s*Asset \{\s*content_type: (\w+),\s*body: include_bytes!\("\.\./([^"]+)"\)',
        source,
    ):
        path = "/dashboard" + ("/" + name if name else "")
        files[path] = (types[ctype], REPO / rel)
    policy = re.search(r'CONTENT_SECURITY_POLICY: &str = "(.*?)";', source, re.S).group(1)
    policy = re.sub(r"\\\n\s*", "", policy)
    headers = [
        ("content-security-policy", policy),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-cache"),
        ("referrer-policy", "no-referrer"),
    ]
    assert files and "/dashboard" in files, "no assets found in src/dashboard.rs"
    return files, headers


# The /stats groups the stand-in answers.
GROUPS = ("route", "model", "source", "caller", "session", "project", "provider", "client")
# Which agent or SDK each caller sends with (by_client).
CLIENTS = {"alice": "claude-code", "bob": "claude-code", "carol": "anthropic-sdk-python", "ci-bot": "anthropic-sdk-node"}


def make_requests(now, count=2600, seed=7):
    """Realistic traffic: a team of four over 30 days, busier in working hours."""
    rng = random.Random(seed)
    callers = [("alice", 0.38), ("bob", 0.27), ("carol", 0.2), ("ci-bot", 0.15)]
    projects = ["web", "billing", "infra", None]
    models = [("claude-sonnet-4-5", 0.62), ("claude-opus-4-5", 0.18), ("claude-haiku-4-5", 0.20)]
    sessions = {c: ["%08x-%04x-4%03x-8%03x-%012x" % (rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(12), rng.getrandbits(12), rng.getrandbits(48)) for _ in range(6)] for c, _ in callers}
    out = []
    while len(out) < count:
        age = rng.random() ** 1.6 * 30 * 86400  # more recent traffic is denser
        t = now - timedelta(seconds=age)
        hour = t.hour
        if not (7 <= hour <= 19) and rng.random() < 0.75:
            continue
        caller = rng.choices([c for c, _ in callers], [w for _, w in callers])[0]
        model = rng.choices([m for m, _ in models], [w for _, w in models])[0]
        status = rng.choices([200, 429, 529, 500, 400, 401], [0.955, 0.02, 0.01, 0.005, 0.006, 0.004])[0]
        ok = status == 200
        inp = rng.randint(3, 4000) if ok else 0
        out_t = rng.randint(40, 3000) if ok else 0
        cw = rng.choice([0, 0, 0, rng.randint(500, 12000)]) if ok else 0
        cr = rng.randint(5000, 90000) if ok else 0
        p = PRICES[model]
        cost = round((inp * p[0] + out_t * p[1] + cw * p[2] + cr * p[3]) / 1e6, 9)
        source = "client_oauth" if caller in ("alice", "carol") else "server_key"
        ttfb = rng.lognormvariate(6.6, 0.5)
        out.append({
            "t": t,
            "model": model,
            "caller": caller,
            "project": rng.choice(projects),
            "provider": "anthropic",
            "client": CLIENTS[caller],
            "session": rng.choice(sessions[caller]),
            "source": source,
            "route": "/anthropic",
            "status": status,
            "requests": 1,
            "errors": 0 if ok else 1,
            "streamed": 1 if ok and rng.random() < 0.9 else 0,
            "incomplete": 1 if ok and rng.random() < 0.01 else 0,
            "input_tokens": inp,
            "output_tokens": out_t,
            "cache_creation_input_tokens": cw,
            "cache_read_input_tokens": cr,
            "web_search_requests": 0,
            "cost_usd": cost,
            "ttfb": ttfb,
            "total": ttfb + rng.lognormvariate(8.5, 0.8),
            "overhead": rng.lognormvariate(-0.6, 0.4),
        })
    out.sort(key=lambda r: r["t"])
    return out


def empty_counters():
    c = {f: 0 for f in COUNTER_FIELDS}
    c["cost_usd"] = 0.0
    return c


def add(c, r):
    for f in COUNTER_FIELDS:
        c[f] += r[f]
    c["cost_usd"] = round(c["cost_usd"] + r["cost_usd"], 9)


def parse_time(text, now):
    if text is None:
        return None
    m = re.fullmatch(r"(\d+)([mhd])", text)
    if m:
        unit = {"m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return now - timedelta(**{unit: int(m.group(1))})
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def in_range(records, since, until):
    return [r for r in records if (since is None or r["t"] >= since) and (until is None or r["t"] < until)]


def percentiles(values):
    if not values:
        return {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    v = sorted(values)
    pick = lambda q: round(v[min(len(v) - 1, int(q * len(v)))], 1)
    return {"count": len(v), "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": round(v[-1], 1)}


class FakeSluice:
    def __init__(self, records, token=None, now=None):
        self.records = records
        self.token = token
        self.now = now or datetime.now(timezone.utc)
        self.files, self.headers = dashboard_files()
        self.seen = []  # (path with query, authorization header or None, status)

    def usage(self, q):
        now = datetime.now(timezone.utc)
        since, until = parse_time(q.get("since"), now), parse_time(q.get("until"), now)
        group_by = [g for g in q.get("group_by", "").split(",") if g]
        tz = ZoneInfo(q.get("tz") or "UTC")
        rows, totals = {}, empty_counters()
        for r in in_range(self.records, since, until):
            key = []
            for g in group_by:
                local = r["t"].astimezone(tz)
                if g == "hour":
                    key.append(local.replace(minute=0, second=0, microsecond=0).isoformat())
                elif g == "day":
                    key.append(local.date().isoformat())
                else:
                    key.append(r[g])
            row = rows.setdefault(tuple(key), empty_counters())
            add(row, r)
            add(totals, r)
        out = []
        for key in sorted(rows, key=lambda k: [str(x) for x in k]):
            row = dict(zip(group_by, key))
            row.update(rows[key])
            out.append(row)
        return {"since": q.get("since"), "until": q.get("until"), "group_by": group_by, "rows": out, "totals": totals}

    def stats(self, q):
        now = datetime.now(timezone.utc)
        since, until = parse_time(q.get("since"), now), parse_time(q.get("until"), now)
        picked = in_range(self.records, since, until)
        doc = {"started_at": self.now.isoformat(), "totals": empty_counters(), "by_status": {}}
        for g in GROUPS:
            doc["by_" + g] = {}
        for r in picked:
            add(doc["totals"], r)
            for g in GROUPS:
                if r[g] is not None:
                    add(doc["by_" + g].setdefault(r[g], empty_counters()), r)
            doc["by_status"][str(r["status"])] = doc["by_status"].get(str(r["status"]), 0) + 1
        doc["latency_ms"] = {k: percentiles([r[k] for r in picked]) for k in ("ttfb", "total", "overhead")}
        doc["rate_limits"] = {} if not self.records else {
            "client_oauth:3fa29c1b4d5e": {
                "seen_at": (now - timedelta(seconds=40)).isoformat(),
                "status": "allowed",
                "windows": {
                    "5h": {"utilization": 0.42, "resets_at": (now + timedelta(hours=2, minutes=13)).isoformat(), "status": "allowed"},
                    "7d": {"utilization": 0.63, "resets_at": (now + timedelta(days=3, hours=5)).isoformat(), "status": "allowed"},
                },
            },
            # As a sluice without the typed windows reports it: the raw headers only.
            "client_oauth:77aa00c3e1f2": {
                "seen_at": (now - timedelta(hours=2)).isoformat(),
                "headers": {
                    "anthropic-ratelimit-unified-status": "allowed",
                    "anthropic-ratelimit-unified-5h-utilization": "0.18",
                    "anthropic-ratelimit-unified-5h-reset": str(int((now + timedelta(hours=3, minutes=2)).timestamp())),
                    "anthropic-ratelimit-unified-5h-status": "allowed",
                    "anthropic-ratelimit-unified-7d-utilization": "0.27",
                    "anthropic-ratelimit-unified-7d-reset": str(int((now + timedelta(days=4)).timestamp())),
                    "anthropic-ratelimit-unified-7d-status": "allowed",
                },
            },
            "client_oauth:9b0e77a2c410": {
                "seen_at": (now - timedelta(minutes=3)).isoformat(),
                "status": "rejected",
                "windows": {
                    "5h": {"utilization": 1.01, "resets_at": (now + timedelta(minutes=47)).isoformat(), "status": "rejected"},
                    "7d": {"utilization": 0.88, "resets_at": (now + timedelta(days=1, hours=9)).isoformat(), "status": "allowed_warning"},
                },
            },
        }
        midnight = now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        # The shape of sluice's /stats: each quota with its limits, and what each subject used.
        doc["quotas"] = [] if not self.records else [{
            "name": "daily-per-person", "mode": "enforce", "window": "day", "timezone": "UTC",
            "limits": {"usd": 20.0, "tokens": None, "requests": 2000, "concurrent": None},
            "refused": 3, "would_refuse": 0, "folded": 0, "subjects_total": 2,
            "subjects": [
                {"subject": "bob", "used": {"usd": 14.2871, "tokens": 3120400, "requests": 212, "in_flight": 1},
                 "remaining": {"usd": 5.7129, "tokens": None, "requests": 1788, "concurrent": None},
                 "resets_at": midnight.isoformat(), "refused": 0, "would_refuse": 0},
                {"subject": "ci-bot", "used": {"usd": 19.9512, "tokens": 4870000, "requests": 1510, "in_flight": 0},
                 "remaining": {"usd": 0.0488, "tokens": None, "requests": 490, "concurrent": None},
                 "resets_at": midnight.isoformat(), "refused": 3, "would_refuse": 0},
            ],
        }]
        return doc


def handler_for(fake):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send(self, status, ctype, body, extra=()):
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            for name, value in extra:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            url = urlsplit(self.path)
            if url.path in fake.files:
                ctype, path = fake.files[url.path]
                self.send(200, ctype, path.read_bytes(), fake.headers)
                return
            if url.path not in ("/usage", "/stats"):
                self.send(404, "text/plain", b"not found")
                return
            auth = self.headers.get("authorization")
            if fake.token and auth != "Bearer " + fake.token:
                fake.seen.append((self.path, auth, 401))
                body = json.dumps({"type": "error", "error": {"type": "authentication_error", "message": "sluice: missing or wrong admin token (send Authorization: Bearer <token>)"}})
                self.send(401, "application/json", body.encode(), [("x-sluice-error", "admin_token")])
                return
            fake.seen.append((self.path, auth, 200))
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            doc = fake.usage(q) if url.path == "/usage" else fake.stats(q)
            self.send(200, "application/json", json.dumps(doc).encode())

    return Handler


def serve(fake, port=0):
    """Starts serving on 127.0.0.1 in a thread; returns (server, base URL)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_for(fake))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, "http://127.0.0.1:%d" % server.server_address[1]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--token")
    parser.add_argument("--empty", action="store_true", help="no requests at all")
    args = parser.parse_args()
    now = datetime.now(timezone.utc)
    fake = FakeSluice([] if args.empty else make_requests(now), args.token, now)
    server, base = serve(fake, args.port)
    print("dashboard at %s/dashboard" % base, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
