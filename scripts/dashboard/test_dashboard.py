"""The dashboard in a real browser (Debian's chromium through Playwright), against a sluice on
127.0.0.1.

Checks: no console error, no request leaving 127.0.0.1, the admin-token prompt (401 first, then
the bearer), the totals shown and every cell of the charts' series equal the sums of the known
requests in the range the page asked for, the subscription panel, the empty state; saves
screenshots at 1280x800 and 390x844.

    python3 scripts/dashboard/test_dashboard.py [--out DIR]
    python3 scripts/dashboard/test_dashboard.py --url http://127.0.0.1:PORT --token T --known known.json

With --url it drives that real sluice, whose store was filled by examples/fill_store.rs; the
expected sums are worked out from the filler's rows (--known), never from sluice's /usage.
Without --url it drives a stand-in (fake_sluice.py) that answers from requests made up here,
which only checks the page itself.
"""

import argparse
import json
import math
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_sluice  # noqa: E402
import known  # noqa: E402

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TOKEN = "dashboard-test-token"
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def usd(x):
    return "$" + format(x, ",.4f")


def expected_sums(base, token, usage_path):
    """The sums of the known requests in the range the page asked for, from the server itself."""
    q = {k: v[0] for k, v in parse_qs(urlsplit(usage_path).query).items()}
    q.pop("group_by", None)
    url = base + "/usage?group_by=&" + "&".join("%s=%s" % (k, urllib.request.quote(v, safe="")) for k, v in q.items())
    req = urllib.request.Request(url, headers={"Authorization": "Bearer " + token} if token else {})
    totals = json.load(urllib.request.urlopen(req))["totals"]
    tokens = sum(totals[f] for f in fake_sluice.TOKEN_FIELDS)
    return totals, tokens


def watch(page, base):
    log = {"console": [], "requests": [], "api": []}
    page.on("console", lambda m: log["console"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: log["console"].append("pageerror: %s" % e))
    page.on("request", lambda r: log["requests"].append(r.url))

    def on_response(resp):
        path = urlsplit(resp.url).path
        if path in ("/usage", "/stats"):
            log["api"].append((resp.url, resp.request.headers.get("authorization"), resp.status))

    page.on("response", on_response)
    return log


def last_usage_url(log):
    urls = [u for u, _, status in log["api"] if urlsplit(u).path == "/usage" and status == 200]
    return urls[-1]


def wait_js(page, expression, arg=None, timeout=15000):
    """Polls `expression` from here: sluice's Content-Security-Policy forbids the eval that
    Playwright's in-page wait_for_function needs, and the test keeps that policy enforced."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression, arg):
        if time.monotonic() > deadline:
            raise TimeoutError("waited %d ms for %s" % (timeout, expression))
        page.wait_for_timeout(50)


def wait_refresh(page, after):
    wait_js(page, "(n) => !!window.__sluice && window.__sluice.refreshes > n", after)


def check_sums(page, base, token, log, label, rows=None):
    usage_url = last_usage_url(log)
    if rows is None:
        totals, tokens = expected_sums(base, token, usage_url)
        cells = None
    else:
        totals, spend_cells, token_cells = known.expected(rows, usage_url)
        tokens = totals["tokens"]
        cells = (spend_cells, token_cells)
    check(totals["requests"] > 0, "%s: the range holds known requests (%d)" % (label, totals["requests"]))
    shown = {k: page.inner_text("#kpi-" + k) for k in ("cost", "requests", "tokens", "errors")}
    check(shown["cost"] == usd(totals["cost_usd"]), "%s: spend shown %s == %s" % (label, shown["cost"], usd(totals["cost_usd"])))
    check(shown["requests"] == format(totals["requests"], ","), "%s: requests shown %s == %d" % (label, shown["requests"], totals["requests"]))
    check(shown["tokens"] == format(tokens, ","), "%s: tokens shown %s == %d" % (label, shown["tokens"], tokens))
    check(shown["errors"] == format(totals["errors"], ","), "%s: errors shown %s == %d" % (label, shown["errors"], totals["errors"]))
    charts = page.evaluate("window.__sluice.charts")
    # [name, values] pairs: the page keys nothing by a name ("__proto__" is one).
    spend = sum(sum(v) for _, v in charts["spend"]["raw"])
    token_sum = sum(sum(v) for _, v in charts["tokens"]["raw"])
    check(math.isclose(spend, totals["cost_usd"], abs_tol=1e-6), "%s: spend series sum %.9f == %.9f" % (label, spend, totals["cost_usd"]))
    check(token_sum == tokens, "%s: token series sum %d == %d" % (label, token_sum, tokens))
    if cells is not None:
        spend_cells, token_cells = cells
        got_spend = known.chart_cells(charts["spend"])
        got_tokens = known.chart_cells(charts["tokens"])
        wrong = sorted(c for c in set(got_spend) | set(spend_cells)
                       if not math.isclose(got_spend.get(c, 0.0), spend_cells.get(c, 0.0), abs_tol=1e-9))
        check(not wrong, "%s: every spend bar (%d series x bucket cells) equals the known sum %s" % (
            label, len(spend_cells), [(c, got_spend.get(c), spend_cells.get(c)) for c in wrong[:4]]))
        wrong = sorted(c for c in set(got_tokens) | set(token_cells) if got_tokens.get(c) != token_cells.get(c))
        check(not wrong, "%s: every token bar (%d cells) equals the known sum %s" % (
            label, len(token_cells), [(c, got_tokens.get(c), token_cells.get(c)) for c in wrong[:4]]))
        check(sorted(charts["spend"]["names"]) == totals["series"],
              "%s: series are %s" % (label, charts["spend"]["names"]))
    return charts


# Names a client can give a model (an upstream's 404 lets them into the store) or an operator a
# caller: the names of a plain object's prototype members.
HOSTILE_NAMES = ["__proto__", "constructor", "toString", "hasOwnProperty"]


def hostile_requests(now):
    """The stand-in's traffic with its models and callers renamed after prototype members."""
    out = fake_sluice.make_requests(now, count=400, seed=26)
    for i, r in enumerate(out):
        r["model"] = HOSTILE_NAMES[i % len(HOSTILE_NAMES)]
        r["caller"] = HOSTILE_NAMES[(i // 2) % len(HOSTILE_NAMES)]
    return out


def check_hostile_names(browser, timezone_id):
    """A model named __proto__ once blanked the page: its series were keyed in plain objects."""
    now = datetime.now(timezone.utc)
    server, base = fake_sluice.serve(fake_sluice.FakeSluice(hostile_requests(now), None, now))
    try:
        page = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id=timezone_id).new_page()
        log = watch(page, base)
        page.goto(base + "/dashboard")
        for stack in ("model", "caller"):
            n = page.evaluate("window.__sluice.refreshes")
            if stack == "caller":
                page.click("[data-stack=caller]")
            wait_refresh(page, n)
            charts = check_sums(page, base, None, log, "names like __proto__, by " + stack)
            names = sorted(charts["spend"]["names"])
            check(names == sorted(HOSTILE_NAMES), "by %s: a series for each of %s: %s" % (stack, HOSTILE_NAMES, names))
            legend = page.inner_text("#legend-spend")
            check(all(name in legend for name in HOSTILE_NAMES), "by %s: the legend names them all: %r" % (stack, legend))
        models = page.inner_text("#top-models")
        check(all(name in models for name in HOSTILE_NAMES), "the busiest models list them: %r" % models)
        check(not log["console"], "names like __proto__: no console errors %s" % log["console"])
    finally:
        server.shutdown()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "out"))
    parser.add_argument("--url", help="a running sluice with a filled store (default: the stand-in)")
    parser.add_argument("--token", help="its admin token")
    parser.add_argument("--known", help="the filler's rows (examples/fill_store.rs --known); needed with --url")
    parser.add_argument("--empty-url", help="a sluice with an empty store and no admin token (default: the stand-in)")
    parser.add_argument("--timezone", default="Europe/Berlin", help="the browser's time zone")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    servers = []
    rows = None
    if args.url:
        if not args.known:
            parser.error("--url needs --known: the sums are worked out from the filler's rows")
        base, token = args.url.rstrip("/"), args.token
        rows = known.load(args.known)
    else:
        now = datetime.now(timezone.utc)
        server, base = fake_sluice.serve(fake_sluice.FakeSluice(fake_sluice.make_requests(now), TOKEN, now))
        servers.append(server)
        token = TOKEN
    if args.empty_url:
        empty_base = args.empty_url.rstrip("/")
    else:
        empty_server, empty_base = fake_sluice.serve(fake_sluice.FakeSluice([], None))
        servers.append(empty_server)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 800}, device_scale_factor=1, timezone_id=args.timezone)
            page = context.new_page()
            log = watch(page, base)
            page.goto(base + "/dashboard")

            if token:
                page.wait_for_selector("#token-dialog[open]", timeout=10000)
                check(log["api"] and log["api"][0][2] == 401 and log["api"][0][1] is None,
                      "first data call goes without a token and gets 401")
                page.fill("#token-input", "not-the-token")
                page.click("#token-dialog button[type=submit]")
                wait_js(page, "() => document.getElementById('token-message').className === 'refused'", timeout=10000)
                check(page.is_visible("#token-dialog"), "a wrong token is refused and asked for again")
                page.fill("#token-input", token)
                page.click("#token-dialog button[type=submit]")
            wait_refresh(page, 0)
            if token:
                authorized = [a for _, a, s in log["api"] if s == 200]
                check(authorized and all(a == "Bearer " + token for a in authorized), "data calls carry the bearer token after the prompt")
                stored = page.evaluate("sessionStorage.getItem('sluice.adminToken')")
                check(stored == token, "the token is kept for the tab (sessionStorage)")

            charts = check_sums(page, base, token, log, "24 h by model", rows)
            check(set(charts["spend"]["names"]) <= {"claude-sonnet-4-5", "claude-opus-4-5", "claude-haiku-4-5", "other"} or bool(args.url),
                  "24 h series are models: %s" % charts["spend"]["names"])
            subs = page.inner_text("#subscriptions")
            if args.url:
                # probe.py left one login at 42% of its 5-hour window (resets in 2 h 13 min) and
                # one refused until its window resets in 47 min.
                check("Limit reached, resets at" in subs, "a refused credential says when its limit resets: %r" % subs)
                check("42%" in subs and "resets in 2 h" in subs, "utilisation and countdown of the 5-hour window")
                check("31%" in subs and "68%" in subs, "the 7-day windows of both subscriptions")
                stats = json.load(urllib.request.urlopen(urllib.request.Request(
                    base + "/stats", headers={"Authorization": "Bearer " + token})))
                # The quota is "team-daily", caller "*", per UTC day: each caller's spend since
                # midnight, summed here from the known rows.
                midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
                spent = {}
                for r in rows:
                    if r["caller"] and r["finished_ms"] >= midnight.timestamp() * 1000:
                        spent[r["caller"]] = spent.get(r["caller"], 0.0) + r["cost_usd"]
                blocks = page.locator("#quotas .cred").all_inner_texts()
                for caller, usd_spent in sorted(spent.items()):
                    block = next((b for b in blocks if ("team-daily · " + caller) in b), "")
                    check(usd(usd_spent) + " of $250.0000" in block,
                          "quota meter of %s shows today's %s: %r" % (caller, usd(usd_spent), block))
                check(len(spent) > 0, "the known rows have spend today to check the quota against")
                if "alice" in json.dumps(stats.get("by_caller")):
                    callers = page.inner_text("#top-callers")
                    check(all(c in callers for c in ("alice", "bob", "carol", "ci-bot")), "the busiest callers are listed: %r" % callers)
                else:
                    print("note: this sluice's /stats does not count from the store; busiest lists not checked", flush=True)
            else:
                check("Limit reached, resets at" in subs, "a refused credential says when its limit resets")
                check("42%" in subs and "resets in 2 h" in subs, "utilisation and countdown of the 5-hour window")
                check("18%" in subs and "27%" in subs and "resets in 3 h" in subs, "a credential with only the raw unified headers is read too")
                quotas = page.inner_text("#quotas")
                check("daily-per-person · ci-bot" in quotas and "$19.9512 of $20.0000" in quotas,
                      "quotas panel shows each subject's use against the limit: %r" % quotas)

            clients = page.inner_text("#top-clients")
            check(all(c in clients for c in ("claude-code", "anthropic-sdk-python", "anthropic-sdk-node")),
                  "the clients table lists the agents and SDKs that sent requests: %r" % clients)

            n = page.evaluate("window.__sluice.refreshes")
            page.click("[data-stack=provider]")
            wait_refresh(page, n)
            charts = check_sums(page, base, token, log, "24 h by provider", rows)
            check("group_by=hour%2Cprovider" in last_usage_url(log), "stacking by provider asks /usage for hour,provider")
            check(charts["spend"]["names"] == ["anthropic"], "spend by provider: %s" % charts["spend"]["names"])

            n = page.evaluate("window.__sluice.refreshes")
            page.click("[data-stack=caller]")
            wait_refresh(page, n)
            charts = check_sums(page, base, token, log, "24 h by caller", rows)
            check("group_by=hour%2Ccaller" in last_usage_url(log), "stacking by caller asks /usage for hour,caller")

            n = page.evaluate("window.__sluice.refreshes")
            page.click("[data-range='7d']")
            wait_refresh(page, n)
            check_sums(page, base, token, log, "7 d by caller", rows)

            n = page.evaluate("window.__sluice.refreshes")
            page.click("[data-stack=model]")
            page.click("[data-range='30d']")
            wait_refresh(page, n + 1)
            check_sums(page, base, token, log, "30 d by model", rows)
            check("group_by=day%2Cmodel" in last_usage_url(log), "30 d asks /usage for day,model")

            n = page.evaluate("window.__sluice.refreshes")
            page.click("[data-range='custom']")
            page.fill("#custom-since", page.evaluate("(() => { const d = new Date(Date.now() - 3 * 86400e3); d.setMinutes(d.getMinutes() - d.getTimezoneOffset()); return d.toISOString().slice(0, 16); })()"))
            page.fill("#custom-until", page.evaluate("(() => { const d = new Date(Date.now() - 86400e3); d.setMinutes(d.getMinutes() - d.getTimezoneOffset()); return d.toISOString().slice(0, 16); })()"))
            page.click("#custom button[type=submit]")
            wait_refresh(page, n)
            check("until=" in last_usage_url(log) and "group_by=hour%2Cmodel" in last_usage_url(log), "a custom range asks /usage with since and until")
            check_sums(page, base, token, log, "custom 2 days by model", rows)

            n = page.evaluate("window.__sluice.refreshes")
            page.click("[data-range='24h']")
            wait_refresh(page, n)
            page.wait_for_timeout(600)
            page.screenshot(path=str(out / "dashboard-1280x800.png"), full_page=False)
            page.screenshot(path=str(out / "dashboard-1280-full.png"), full_page=True)

            n = page.evaluate("window.__sluice.refreshes")
            page.evaluate("window.__chartBefore = document.querySelector('#chart-spend .uplot')")
            wait_js(page, "(n) => window.__sluice.refreshes > n", n, timeout=8000)
            check(True, "the page refreshes by itself within 5 s")
            check(page.evaluate("window.__chartBefore === document.querySelector('#chart-spend .uplot')"),
                  "a refresh updates the chart in place (hover survives)")

            phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True, timezone_id=args.timezone)
            mpage = phone.new_page()
            mlog = watch(mpage, base)
            if token:
                mpage.add_init_script("sessionStorage.setItem('sluice.adminToken', %s)" % json.dumps(token))
            mpage.goto(base + "/dashboard")
            wait_refresh(mpage, 0)
            mpage.wait_for_timeout(400)
            overflow = mpage.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            check(overflow <= 0, "no sideways scrolling on a phone (overflow %dpx)" % overflow)
            mpage.screenshot(path=str(out / "dashboard-390x844.png"), full_page=False)
            mpage.screenshot(path=str(out / "dashboard-390-full.png"), full_page=True)

            epage = context.new_page()
            elog = watch(epage, empty_base)
            epage.goto(empty_base + "/dashboard")
            wait_refresh(epage, 0)
            text = epage.inner_text("#empty")
            check(epage.is_visible("#empty") and "ANTHROPIC_BASE_URL" in text and empty_base in text,
                  "with no requests the page says where to point ANTHROPIC_BASE_URL: %r" % text)
            check(text.startswith("No requests yet"), "an empty sluice says no requests yet, not 'try a wider range'")
            check("No subscription traffic" in epage.inner_text("#subscriptions"), "empty subscriptions say what shows there")
            check("No quotas set" in epage.inner_text("#quotas"), "empty quotas say how to add one")
            epage.screenshot(path=str(out / "dashboard-empty.png"), full_page=False)

            dark = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="dark", timezone_id=args.timezone)
            dpage = dark.new_page()
            dlog = watch(dpage, base)
            if token:
                dpage.add_init_script("sessionStorage.setItem('sluice.adminToken', %s)" % json.dumps(token))
            dpage.goto(base + "/dashboard")
            wait_refresh(dpage, 0)
            dpage.wait_for_timeout(400)
            dpage.screenshot(path=str(out / "dashboard-dark-1280x800.png"), full_page=False)

            check_hostile_names(browser, args.timezone)

            for name, lg in (("main", log), ("phone", mlog), ("empty", elog), ("dark", dlog)):
                # Chromium logs every 401 it receives; the token prompt provokes exactly those.
                provoked = sum(1 for _, _, status in lg["api"] if status == 401)
                unauthorized = "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
                errors = [m for m in lg["console"] if m != unauthorized]
                check(not errors and lg["console"].count(unauthorized) == provoked,
                      "%s: no console errors but the %d provoked 401s %s" % (name, provoked, lg["console"]))
                outside = [u for u in lg["requests"] if not (u.startswith("http://127.0.0.1:") or u.startswith("data:"))]
                check(not outside, "%s: no request leaves 127.0.0.1 (%d requests) %s" % (name, len(lg["requests"]), outside))
        finally:
            browser.close()
            for s in servers:
                s.shutdown()

    print("screenshots in %s" % out)
    if failures:
        print("%d check(s) failed" % len(failures))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
