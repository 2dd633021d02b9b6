"""Sums of the known rows a filler put into sluice's store (examples/fill_store.rs --known), for
any range, bucket and stacking the dashboard asks /usage for. Worked out here from the rows
alone, never from sluice's answers."""

import json
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def load(path):
    with open(path) as f:
        return json.load(f)["rows"]


def is_error(row):
    return row["status"] >= 400 or row["outcome"] == "upstream_error_event"


def tokens_of(row):
    return sum(row[f] for f in TOKEN_FIELDS)


def parse_time(text):
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def bucket_start(ms, bucket, tz):
    """Unix seconds of the local hour or day that holds `ms`, as the page places its bars."""
    local = datetime.fromtimestamp(ms / 1000, tz)
    local = local.replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        local = local.replace(hour=0)
    # Re-attach the zone so a day that starts in another offset (DST) gets its own offset.
    local = local.replace(tzinfo=None).replace(tzinfo=tz)
    return int(local.timestamp())


def expected(rows, usage_url):
    """Totals and chart cells of the rows inside the range of the page's /usage call."""
    q = {k: v[0] for k, v in parse_qs(urlsplit(usage_url).query).items()}
    since = parse_time(q["since"]) if "since" in q else None
    until = parse_time(q["until"]) if "until" in q else None
    bucket, dim = q["group_by"].split(",")
    tz = ZoneInfo(q.get("tz", "UTC"))
    inside = [r for r in rows if (since is None or r["finished_ms"] >= since) and (until is None or r["finished_ms"] < until)]
    totals = {
        "requests": len(inside),
        "errors": sum(1 for r in inside if is_error(r)),
        "tokens": sum(tokens_of(r) for r in inside),
        "cost_usd": sum(r["cost_usd"] for r in inside),
        "streamed": sum(1 for r in inside if r["streamed"]),
    }
    spend, tokens = {}, {}
    for r in inside:
        name = r[dim] or "(none)"
        cell = (name, bucket_start(r["finished_ms"], bucket, tz))
        spend[cell] = spend.get(cell, 0.0) + r["cost_usd"]
        tokens[cell] = tokens.get(cell, 0) + tokens_of(r)
    # The page's cells of zero (an error answer has no tokens) are left out on both sides.
    totals["series"] = sorted({r[dim] or "(none)" for r in inside})
    return totals, {c: v for c, v in spend.items() if v}, {c: v for c, v in tokens.items() if v}


def chart_cells(chart):
    """The page's chart as {(series, bucket seconds): value}, zero cells left out."""
    cells = {}
    for name, values in chart["raw"]:
        for t, v in zip(chart["times"], values):
            if v:
                cells[(name, int(t))] = v
    return cells
