#!/usr/bin/env python3
"""Gemini through sluice, end to end: the official Python SDK (google-genai) and the real
Gemini CLI against a mock Gemini API / Code Assist upstream (mock_gemini.py beside this file).

Checks that what each client itself reports as usage is what /stats counted (input = prompt +
tool-use prompt - cached, cache reads = cached, output = candidates + thoughts), that countTokens
and embeddings cost nothing, which credential went upstream (the client's own, the server key
as x-goog-api-key when the client sent none, a `?key=` forwarded as sent), and that no key used
appears in sluice's log, /stats, /usage, /metrics or the store file; `by_client` names
google-genai-python and gemini-cli.

Run by run.sh beside it, or with the venv that has google-genai (requirements.txt here):
    SLUICE_BIN=target/debug/sluice GEMINI_CLI=path/to/gemini python checks.py
GEMINI_CLI unset: the CLI checks are skipped (and said so). Only 127.0.0.1 is used; run it in
a network namespace of its own (`unshare -n`) to be sure no client phones home.
Prints PASS/FAIL per check, ends with "N passed, M failed", exits 1 on any failure.
"""

import json
import os
import pathlib
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import client_genai  # noqa: E402  (the SDK calls, shared with manual runs)
from mock_gemini import fingerprint  # noqa: E402

ROOT = HERE.parents[2]
BIN = os.environ.get("SLUICE_BIN", str(ROOT / "target" / "debug" / "sluice"))
GEMINI_CLI = os.environ.get("GEMINI_CLI", "")
COUNTED = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")

passed = failed = 0


def check(what, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print("PASS " + what, flush=True)
    else:
        failed += 1
        print("FAIL %s\n     %s" % (what, detail), flush=True)
    return ok


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def get_text(url):
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read().decode("utf-8", "replace")


def counters(usage):
    """COUNTERS from what the SDK (or the mock) reported: sluice's meaning of each field."""
    return {
        "input_tokens": max(0, usage["prompt"] + usage["tool_use"] - usage["cached"]),
        "cache_read_input_tokens": usage["cached"],
        "output_tokens": usage["candidates"] + usage["thoughts"],
        "cache_creation_input_tokens": 0,
    }


def mock_usage_as_sdk(meta):
    meta = meta or {}
    return {
        "prompt": meta.get("promptTokenCount", 0),
        "candidates": meta.get("candidatesTokenCount", 0),
        "cached": meta.get("cachedContentTokenCount", 0),
        "thoughts": meta.get("thoughtsTokenCount", 0),
        "tool_use": meta.get("toolUsePromptTokenCount", 0),
    }


class Run:
    """A mock upstream and one sluice in front of it, in a scratch folder."""

    def __init__(self, scratch):
        self.scratch = pathlib.Path(scratch)
        self.procs = []
        self.server_key = "AIzaSy-e2e-server-" + secrets.token_hex(10)
        self.client_key = "AIzaSy-e2e-client-" + secrets.token_hex(10)
        self.query_key = "AIzaSy-e2e-query-" + secrets.token_hex(10)
        self.oauth_token = "ya29.e2e-oauth-" + secrets.token_hex(12)
        self.access_key = "sluice-e2e-gemini-" + secrets.token_hex(10)
        self.secrets = [self.server_key, self.client_key, self.query_key, self.oauth_token,
                        self.access_key]
        mock_port = free_port()
        self.mock_log = self.scratch / "mock-gemini.jsonl"
        self.procs.append(subprocess.Popen(
            [sys.executable, str(HERE / "mock_gemini.py"), "--port", str(mock_port),
             "--log", str(self.mock_log)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.mock = "http://127.0.0.1:%d" % mock_port
        port = free_port()
        self.store = self.scratch / "gemini.db"
        settings = self.scratch / "gemini.toml"
        settings.write_text(f"""listen = "127.0.0.1:{port}"
shutdown_grace_s = 2
[[routes]]
prefix = "/gemini"
upstream = "{self.mock}"
protocol = "gemini"
server_key_env = "E2E_GEMINI_SERVER_KEY"
[[routes]]
prefix = "/code-assist"
upstream = "{self.mock}"
protocol = "gemini"
credential_policy = "client_only"
[access]
header = "x-sluice-key"
[[access.keys]]
name = "alice"
key_env = "E2E_GEMINI_ACCESS"
[stats]
state_file = ""
[store]
path = "{self.store}"
""")
        self.sluice_log = self.scratch / "sluice-gemini.log"
        env = {"PATH": os.environ["PATH"], "RUST_LOG": "info",
               "E2E_GEMINI_SERVER_KEY": self.server_key, "E2E_GEMINI_ACCESS": self.access_key}
        with open(self.sluice_log, "wb") as log:
            self.procs.append(subprocess.Popen([BIN, "--settings", str(settings)], env=env,
                                               stdout=log, stderr=log, cwd=scratch))
        self.base = "http://127.0.0.1:%d" % port
        deadline = time.time() + 90  # a debug build on a busy machine starts slowly
        while True:
            try:
                get_text(self.base + "/healthz")
                get_text(self.mock + "/_mock/requests")
                break
            except OSError as error:
                if time.time() > deadline or self.procs[-1].poll() is not None:
                    raise SystemExit("sluice or the mock did not start (%s): see %s"
                                     % (error, self.sluice_log))
                time.sleep(0.1)
        self.seen = 0

    def stop(self):
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()

    def new_requests(self):
        """What the mock received since the last call."""
        got = get_json("%s/_mock/requests?since=%d" % (self.mock, self.seen))
        self.seen = got["next"]
        return got["requests"]

    def stats(self):
        return get_json(self.base + "/stats")

    def totals_after(self, before, requests):
        """/stats totals added since `before`, once `requests` more have been counted."""
        deadline = time.time() + 10
        while True:
            now = self.stats()["totals"]
            if now["requests"] - before["requests"] >= requests or time.time() > deadline:
                return {f: now[f] - before[f] for f in COUNTED + ("requests",)}
            time.sleep(0.05)


def header(request, name):
    return [v for k, v in request["headers"] if k.lower() == name]


def sdk_checks(run):
    base = run.base + "/gemini"
    access = "x-sluice-key=" + run.access_key
    for mode, model in (("generate", "gemini-2.5-flash"), ("stream", "gemini-2.5-pro")):
        before = run.stats()["totals"]
        out = subprocess.run([sys.executable, str(HERE / "client_genai.py"), base, run.client_key,
                              mode, model, access], capture_output=True, text=True, timeout=60)
        reqs = run.new_requests()
        if not check("google-genai %s: the call succeeds through sluice" % mode,
                     out.returncode == 0, out.stderr[-2000:]):
            continue
        sdk = json.loads(out.stdout)
        counted = run.totals_after(before, 1)
        want = counters(sdk["usage"])
        check("google-genai %s (%s): /stats counted what the SDK reports %s" % (mode, model, sdk["usage"]),
              counted["requests"] == 1 and all(counted[f] == want[f] for f in COUNTED),
              (counted, want))
        sent = [header(q, "x-goog-api-key") for q in reqs]
        check("google-genai %s: the client's own key went upstream, the access key did not" % mode,
              sent == [[fingerprint(run.client_key)]] and not any(header(q, "x-sluice-key") for q in reqs),
              [(q["path"], q["headers"]) for q in reqs])
    for mode in ("count", "embed"):
        before = run.stats()["totals"]
        out = subprocess.run([sys.executable, str(HERE / "client_genai.py"), base, run.client_key,
                              mode, "gemini-2.5-flash", access], capture_output=True, text=True,
                             timeout=60)
        run.new_requests()
        counted = run.totals_after(before, 1)
        check("google-genai %s: counted as a request, with no tokens charged" % mode,
              out.returncode == 0 and counted["requests"] == 1
              and all(counted[f] == 0 for f in COUNTED), (out.stderr[-1000:], counted))

    clients = run.stats().get("by_client", {})
    check("by_client: the SDK's calls count under google-genai-python",
          clients.get("google-genai-python", {}).get("requests", 0) >= 4, sorted(clients))

    # No client key: the server key is inserted as x-goog-api-key.
    before = run.stats()["totals"]
    body = json.dumps({"contents": [{"parts": [{"text": "hi"}]}]}).encode()
    request = urllib.request.Request(base + "/v1beta/models/gemini-2.5-flash:generateContent", body,
                                     {"content-type": "application/json", "x-sluice-key": run.access_key})
    with urllib.request.urlopen(request, timeout=30) as answer:
        data = json.load(answer)
    reqs = run.new_requests()
    check("no client credential: the server key went upstream as x-goog-api-key",
          [header(q, "x-goog-api-key") for q in reqs] == [[fingerprint(run.server_key)]],
          [q["headers"] for q in reqs])
    counted = run.totals_after(before, 1)
    want = counters(mock_usage_as_sdk(data.get("usageMetadata")))
    check("no client credential: usage counted", all(counted[f] == want[f] for f in COUNTED), (counted, want))

    # A key in the query string: forwarded as sent, nothing added.
    before = run.stats()["totals"]
    out = subprocess.run([sys.executable, str(HERE / "client_genai.py"), base, run.query_key,
                          "key-in-query", "gemini-2.5-flash", access], capture_output=True,
                         text=True, timeout=60)
    reqs = run.new_requests()
    check("`?key=`: forwarded as sent, and no server key added",
          out.returncode == 0 and len(reqs) == 1
          and ["key", fingerprint(run.query_key)] in reqs[0]["query"]
          and not header(reqs[0], "x-goog-api-key"), (out.stderr[-1000:], reqs))
    counted = run.totals_after(before, 1)
    if out.returncode == 0:
        want = counters(json.loads(out.stdout)["usage"])
        check("`?key=`: usage counted", all(counted[f] == want[f] for f in COUNTED), (counted, want))

    # sluice's own errors come in Google's shape.
    request = urllib.request.Request(base + "/v1beta/models/gemini-2.5-flash:generateContent", body,
                                     {"content-type": "application/json", "x-sluice-key": "wrong"})
    try:
        urllib.request.urlopen(request, timeout=10)
        check("a wrong access key is refused in Google's error shape", False, "not refused")
    except urllib.error.HTTPError as error:
        shape = json.loads(error.read())
        check("a wrong access key is refused in Google's error shape",
              error.code == 401 and shape.get("error", {}).get("status") == "UNAUTHENTICATED"
              and shape["error"].get("code") == 401
              and shape["error"].get("message", "").startswith("sluice: "), shape)
    run.new_requests()


def cli_home(run, name, settings):
    home = run.scratch / ("home-" + name)
    shutil.rmtree(home, ignore_errors=True)
    (home / ".gemini").mkdir(parents=True)
    (home / ".gemini" / "settings.json").write_text(json.dumps(settings))
    return home


def gemini_cli(run, home, env):
    full = {"PATH": os.environ["PATH"], "HOME": str(home), "GEMINI_CLI_TRUST_WORKSPACE": "true",
            "GEMINI_CLI_CUSTOM_HEADERS": "x-sluice-key: " + run.access_key, **env}
    return subprocess.run([GEMINI_CLI, "-p", "Say hello."], capture_output=True, text=True,
                          timeout=180, env=full, cwd=str(home))


def answered_usage(reqs):
    """What the mock answered with, summed in sluice's terms."""
    total = dict.fromkeys(COUNTED, 0)
    for q in reqs:
        if q.get("usage"):
            for f, n in counters(mock_usage_as_sdk(q["usage"])).items():
                total[f] += n
    return total


def cli_checks(run):
    if not GEMINI_CLI:
        check("Gemini CLI checks skipped: GEMINI_CLI not set", True)
        return
    version = subprocess.run([GEMINI_CLI, "--version"], capture_output=True, text=True,
                             timeout=60, env={"PATH": os.environ["PATH"], "HOME": str(run.scratch)}).stdout.strip()
    label = "Gemini CLI " + version

    # API-key mode: GOOGLE_GEMINI_BASE_URL at sluice, the user's own key.
    home = cli_home(run, "apikey", {"security": {"auth": {"selectedType": "gemini-api-key"}}})
    before = run.stats()["totals"]
    cli_before = run.stats().get("by_client", {}).get("gemini-cli", {}).get("requests", 0)
    r = gemini_cli(run, home, {"GEMINI_API_KEY": run.client_key,
                               "GOOGLE_GEMINI_BASE_URL": run.base + "/gemini"})
    reqs = run.new_requests()
    check("%s (API key): `gemini -p` prints the mock's answer" % label,
          r.returncode == 0 and "Hello from the Gemini mock upstream." in r.stdout, r.stderr[-2000:])
    paths = [(q["path"], q["query"]) for q in reqs]
    check("%s (API key): a generateContent call, then :streamGenerateContent?alt=sse" % label,
          any(p.endswith(":generateContent") for p, _ in paths)
          and any(p.endswith(":streamGenerateContent") and ["alt", "sse"] in qs for p, qs in paths), paths)
    check("%s (API key): every call carried the user's key as x-goog-api-key, no access key" % label,
          reqs and all(header(q, "x-goog-api-key") == [fingerprint(run.client_key)]
                       and not header(q, "x-sluice-key") for q in reqs), [q["headers"] for q in reqs])
    counted = run.totals_after(before, len(reqs))
    want = answered_usage(reqs)
    check("%s (API key): /stats counted its %d calls and the tokens the mock answered" % (label, len(reqs)),
          counted["requests"] == len(reqs) and all(counted[f] == want[f] for f in COUNTED), (counted, want))
    agents = sorted({header(q, "user-agent")[0] for q in reqs if header(q, "user-agent")})
    print("     user-agents seen: %s" % agents)
    cli_after = run.stats().get("by_client", {}).get("gemini-cli", {}).get("requests", 0)
    check("%s (API key): by_client counts its %d calls under gemini-cli" % (label, len(reqs)),
          cli_after - cli_before == len(reqs), (cli_before, cli_after, agents))
    models = run.stats().get("by_model", {})
    check("%s (API key): by_model has the models it asked for" % label,
          all(q["path"].split("/models/")[1].split(":")[0] in models
              for q in reqs if "/models/" in q["path"]), sorted(models))

    # Google login (Code Assist): CODE_ASSIST_ENDPOINT at sluice, the user's OAuth token.
    home = cli_home(run, "oauth", {"security": {"auth": {"selectedType": "oauth-personal"}}})
    before = run.stats()["totals"]
    r = gemini_cli(run, home, {"GOOGLE_GENAI_USE_GCA": "true", "GOOGLE_CLOUD_ACCESS_TOKEN": run.oauth_token,
                               "CODE_ASSIST_ENDPOINT": run.base + "/code-assist"})
    reqs = run.new_requests()
    check("%s (Google login): `gemini -p` prints the mock's answer" % label,
          r.returncode == 0 and "Hello from the Gemini mock upstream." in r.stdout, r.stderr[-2000:])
    paths = sorted({q["path"] for q in reqs})
    check("%s (Google login): Code Assist calls under /v1internal, the answer streamed" % label,
          "/v1internal:streamGenerateContent" in paths, paths)
    check("%s (Google login): every call carried the user's own bearer token, never a key" % label,
          reqs and all(header(q, "authorization") == [fingerprint("Bearer " + run.oauth_token)]
                       and not header(q, "x-goog-api-key") for q in reqs), [q["headers"] for q in reqs])
    counted = run.totals_after(before, len(reqs))
    want = answered_usage(reqs)
    check("%s (Google login): /stats counted its %d calls and the wrapped answers' tokens" % (label, len(reqs)),
          counted["requests"] == len(reqs) and all(counted[f] == want[f] for f in COUNTED), (counted, want))
    sessions = sorted({q["session_id"] for q in reqs if q.get("session_id")})
    by_session = run.stats().get("by_session", {})
    check("%s (Google login): the session id of Code Assist's body counts under by_session %s"
          % (label, sessions), sessions and all(s in by_session for s in sessions), sorted(by_session))


def secret_checks(run):
    places = {
        "sluice log": lambda: run.sluice_log.read_text(errors="replace"),
        "/stats": lambda: get_text(run.base + "/stats"),
        "/usage": lambda: get_text(run.base + "/usage?group_by=model"),
        "/metrics": lambda: get_text(run.base + "/metrics"),
    }
    for place, read in places.items():
        try:
            text = read()
        except Exception as error:  # noqa: BLE001  (a place that cannot be read fails the check)
            text = ""
            check("%s can be read" % place, False, error)
            continue
        found = [s[:18] + "…" for s in run.secrets if s in text]
        check("%s (%d bytes) holds none of the %d keys used" % (place, len(text), len(run.secrets)),
              text and not found, found)
    # The store: stop sluice so that every row is written, then read the whole file raw.
    run.procs[-1].terminate()
    run.procs[-1].wait(timeout=20)
    raw = b"".join(p.read_bytes() for p in run.scratch.glob("gemini.db*"))
    found = [s[:18] + "…" for s in run.secrets if s.encode() in raw]
    check("the store file (%d bytes) holds none of the keys used" % len(raw), raw and not found, found)


# The mock's batch (mock_gemini.BATCH_USAGE), each response priced on its own at the batch rate:
# gemini-2.5-flash, half of $0.30 in, $0.03 cached, $2.50 out (thoughts included) per million.
# (120 × 0.30 + 80 × 2.50) + (300 × 0.30 + 600 × 0.03 + 70 × 2.50) = 519 µ$, half: 259.5 µ$.
BATCH_COST_USD = 0.0002595


def batch_checks(run):
    base = run.base + "/gemini"
    access = "x-sluice-key=" + run.access_key
    for mode, name in (("batch-get", "batches/e2e-inlined"),
                       ("batch-download", "files/e2e-responses")):
        before = run.stats()["totals"]
        out = subprocess.run([sys.executable, str(HERE / "client_genai.py"), base, run.client_key,
                              mode, name, access], capture_output=True, text=True, timeout=60)
        reqs = run.new_requests()
        if not check("google-genai %s: the call succeeds through sluice (%s)"
                     % (mode, [q["path"] for q in reqs]), out.returncode == 0, out.stderr[-2000:]):
            continue
        sdk = json.loads(out.stdout)
        counted = run.totals_after(before, 1)
        want = counters(sdk["usage"])
        check("google-genai %s: /stats counted the usage of the %d responses the SDK read %s"
              % (mode, sdk["responses"], sdk["usage"]),
              sdk["responses"] == 2 and counted["requests"] == 1
              and all(counted[f] == want[f] for f in COUNTED), (counted, want))
        cost = run.stats()["totals"]["cost_usd"] - before["cost_usd"]
        check("google-genai %s: priced at the batch rate (%.7f USD)" % (mode, BATCH_COST_USD),
              abs(cost - BATCH_COST_USD) < 1e-9, cost)


def main():
    scratch = tempfile.mkdtemp(prefix="sluice-gemini-e2e-")
    run = Run(scratch)
    try:
        for title, fn in (("google-genai (Python SDK) through sluice", sdk_checks),
                          ("google-genai batches through sluice", batch_checks),
                          ("Gemini CLI through sluice", cli_checks),
                          ("Keys never shown", secret_checks)):
            print("\n== " + title, flush=True)
            try:
                fn(run)
            except Exception:  # noqa: BLE001  (a crash in one section is a failure)
                check(title + " ran to the end", False, traceback.format_exc())
    finally:
        run.stop()
    print("\n%d passed, %d failed (scratch: %s)" % (passed, failed, scratch))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
