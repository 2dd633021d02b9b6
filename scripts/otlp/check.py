#!/usr/bin/env python3
"""Compares what the receiver decoded with sluice's /stats (scripts/otlp-e2e.sh).

Usage: check.py RECEIVED_JSON STATS_JSON TRACE_ID PARENT_SPAN_ID SESSION HEADER_NAME HEADER_VALUE
Prints PASS/FAIL per check and ends with "N passed, M failed"; exits 1 on any failure.
"""

import base64
import json
import sys

received = json.load(open(sys.argv[1]))
stats = json.load(open(sys.argv[2]))
trace_id, parent_id, session, header_name, header_value = sys.argv[3:8]
totals = stats["totals"]
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(("PASS" if ok else "FAIL") + f": {name}" + ("" if ok else f" ({detail})"))


def attrs(kvs):
    out = {}
    for kv in kvs or []:
        value = kv.get("value", {})
        for kind in ("stringValue", "intValue", "doubleValue", "boolValue"):
            if kind in value:
                v = value[kind]
                out[kv["key"]] = int(v) if kind == "intValue" else v
    return out


def b64hex(text):
    return base64.b64decode(text).hex()


check("every body decoded", received["undecodable"] == 0, received["undecodable"])
check("metrics arrived", len(received["metrics"]) > 0)
latest = received["metrics"][-1]
resource = received["metrics"][-1]["resourceMetrics"][0]
res = attrs(resource["resource"]["attributes"])
check("resource service.name", res.get("service.name") == "sluice", res)
check("resource service.version and instance id",
      "service.version" in res and "service.instance.id" in res, res)
metrics = {m["name"]: m for sm in resource["scopeMetrics"] for m in sm["metrics"]}
check("metric names", sorted(metrics) == sorted([
    "gen_ai.client.token.usage", "gen_ai.client.operation.duration",
    "sluice.cost", "sluice.requests"]), sorted(metrics))
units = {name: m.get("unit") for name, m in metrics.items()}
check("units", units == {"gen_ai.client.token.usage": "{token}",
                         "gen_ai.client.operation.duration": "s",
                         "sluice.cost": "USD", "sluice.requests": "{request}"}, units)
CUMULATIVE = "AGGREGATION_TEMPORALITY_CUMULATIVE"
check("cumulative temporality", all(
    m.get("histogram", m.get("sum", {})).get("aggregationTemporality") == CUMULATIVE
    for m in metrics.values()))


def point_sum(point):
    return float(point.get("asDouble", point.get("asInt", 0)))


requests = sum(point_sum(p) for p in metrics["sluice.requests"]["sum"]["dataPoints"])
check("sluice.requests = /stats requests", requests == totals["requests"],
      f"{requests} vs {totals['requests']}")
cost = sum(point_sum(p) for p in metrics["sluice.cost"]["sum"]["dataPoints"])
check("sluice.cost = /stats cost_usd", abs(cost - totals["cost_usd"]) < 1e-9,
      f"{cost} vs {totals['cost_usd']}")
token_points = metrics["gen_ai.client.token.usage"]["histogram"]["dataPoints"]
for token_type, field in [("input", "input_tokens"), ("output", "output_tokens"),
                          ("cache_read", "cache_read_input_tokens"),
                          ("cache_creation", "cache_creation_input_tokens")]:
    total = sum(p.get("sum", 0) for p in token_points
                if attrs(p["attributes"]).get("gen_ai.token.type") == token_type)
    check(f"tokens {token_type} = /stats {field}", total == totals[field],
          f"{total} vs {totals[field]}")
durations = metrics["gen_ai.client.operation.duration"]["histogram"]["dataPoints"]
count = sum(int(p.get("count", 0)) for p in durations)
check("one duration per request", count == totals["requests"], count)
check("duration buckets as the conventions advise", all(
    p["explicitBounds"][0] == 0.01 and p["explicitBounds"][-1] == 81.92 for p in durations))
point_attrs = [attrs(p["attributes"]) for p in metrics["sluice.requests"]["sum"]["dataPoints"]]
check("provider and operation on every point", all(
    a.get("gen_ai.provider.name") == "anthropic" and a.get("gen_ai.operation.name") == "chat"
    for a in point_attrs), point_attrs)
check("error.type on the rate-limited requests",
      any(a.get("error.type") == "429" for a in point_attrs), point_attrs)

spans = [s for t in received["traces"] for rs in t["resourceSpans"]
         for ss in rs["scopeSpans"] for s in ss["spans"]]
check("one span per request", len(spans) == totals["requests"],
      f"{len(spans)} vs {totals['requests']}")
children = [s for s in spans if b64hex(s["traceId"]) == trace_id]
check("traceparent honoured", len(children) == 1
      and b64hex(children[0].get("parentSpanId", "")) == parent_id, children)
if children:
    a = attrs(children[0]["attributes"])
    check("span session and usage", a.get("gen_ai.conversation.id") == session
          and a.get("gen_ai.usage.input_tokens") == 12
          and a.get("gen_ai.usage.output_tokens") == 10, a)
    check("span name", children[0]["name"].startswith("chat claude-"), children[0]["name"])
    check("span kind client", children[0].get("kind") == "SPAN_KIND_CLIENT", children[0])
span_cost = sum(attrs(s["attributes"]).get("sluice.cost", 0) for s in spans)
check("span costs add up to /stats", abs(span_cost - totals["cost_usd"]) < 1e-9, span_cost)
streamed = [attrs(s["attributes"]) for s in spans
            if attrs(s["attributes"]).get("gen_ai.usage.cache_read.input_tokens", 0) > 0]
check("streamed span: input is the whole prompt", any(
    a["gen_ai.usage.input_tokens"] == 849 + 120 + 3000 for a in streamed), streamed)
check("headers file sent, protobuf content type", all(
    h.get(header_name) == header_value and h.get("content-type") == "application/x-protobuf"
    for h in received["headers"]))
check("/stats otlp shows exports", stats["otlp"]["exported"] >= 1 and
      stats["otlp"]["dropped"] == 0, stats["otlp"])

passed = sum(results)
failed = len(results) - passed
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
