#!/usr/bin/env python3
"""The official OpenAI SDKs (Python `openai`, Node `openai`) through sluice's openai route,
against a mock upstream on 127.0.0.1 that replays tests/fixtures/openai/ (and Anthropic's
message.json for the cross-provider quota).

- Usage: `responses.create` plain and streamed (also with a `response.completed` event past a
  megabyte, as a long coding turn sends), `chat.completions.create` streamed with
  `stream_options.include_usage`, `embeddings.create`: what each SDK itself reports as the final
  usage equals what /stats counted for that request (in sluice's meaning of the counters:
  input = the prompt less its cached part; reasoning tokens reported apart).
- Refusals: with access keys, a request without one gets the SDK's `AuthenticationError` (401),
  a body over `max_request_body_bytes` its `APIStatusError` with status 413, and a spent quota its
  `RateLimitError` (429) — each with sluice's "sluice: …" message, and the 429 not retried (the
  quota counts exactly one refusal per call).
- Batches: `batches.retrieve` of a finished batch (whose Batch object sums its requests'
  usage) counts no tokens; `files.content` of its output file counts every 200 line's usage, as
  the SDK's own types parse it, priced at the batch rate.
- Cross-provider quota: one caller's `max_usd` quota counts OpenAI and Anthropic spend together:
  a Responses request and an Anthropic message are admitted, the next request on either
  provider is refused, and the quota's spend is the sum of both.

Run: python scripts/e2e/openai_sdk.py  (with `openai` and `anthropic` installed, e.g. the venv
of scripts/e2e.sh; SLUICE_BIN=path to the binary, default target/debug/sluice; E2E_NODE=node and
E2E_DIR=the folder whose node_modules holds the Node `openai` package, default this folder).
Prints one PASS/FAIL line per check and "N passed, M failed"; exits 1 on any failure.
"""

import http.server
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import anthropic
import openai

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(os.environ.get("E2E_DIR", pathlib.Path(__file__).resolve().parent))
FIXTURES = ROOT / "tests" / "fixtures" / "openai"
ANTHROPIC_MESSAGE = ROOT / "tests" / "fixtures" / "anthropic" / "message.json"
BIN = os.environ.get("SLUICE_BIN", str(ROOT / "target" / "debug" / "sluice"))
NODE = os.environ.get("E2E_NODE", "node")
NODE_CLIENT = pathlib.Path(__file__).resolve().parent / "openai_sdk.mjs"
COUNTED = ("requests", "errors", "input_tokens", "output_tokens", "cache_creation_input_tokens",
           "cache_read_input_tokens", "reasoning_output_tokens", "usage_missing")
CLIENT_KEY = "sk-proj-test-e2e-openai-sdk-4Tq8Wm2Zr6Yp0Vn3"
ANTHROPIC_KEY = "sk-ant-api03-test-e2e-openai-quota-7Hd2Kf5Jm8Np1Qs4"
ALICE = "sluice-e2e-openai-alice-" + os.urandom(8).hex()
BODY_LIMIT = 64 * 1024

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    passed += bool(ok)
    failed += not ok
    print(("PASS " if ok else "FAIL ") + name, flush=True)
    if not ok:
        for line in str(detail).splitlines()[:20]:
            print("       " + line, flush=True)
    return ok


def huge_completed_stream():
    """responses-stream.sse with a megabyte of output items in its response.completed."""
    events = FIXTURES.joinpath("responses-stream.sse").read_text().split("\n\n")
    last = max(i for i, event in enumerate(events) if "response.completed" in event)
    name, data = events[last].split("\n", 1)
    doc = json.loads(data.removeprefix("data: "))
    filler = 'say "usage": {"input_tokens": 1} [{ ' * 30_000
    doc["response"]["output"].insert(0, {"id": "fc_e2e", "type": "function_call", "call_id": "c",
                                         "name": "apply_patch", "arguments": filler})
    events[last] = name + "\ndata: " + json.dumps(doc)
    return "\n\n".join(events).encode()


# A finished Batch object (openai-python `types/batch.py`) whose output file is batch-output.jsonl;
# its `usage` sums the requests the file holds.
BATCH = {"id": "batch_e2e", "object": "batch", "endpoint": "/v1/responses", "model": "gpt-5-2025-08-07",
         "errors": None, "input_file_id": "file-in", "completion_window": "24h",
         "status": "completed", "output_file_id": "file-out", "error_file_id": None,
         "created_at": 1765051000, "completed_at": 1765051200,
         "request_counts": {"total": 5, "completed": 3, "failed": 2},
         "usage": {"input_tokens": 1713, "input_tokens_details": {"cached_tokens": 1024},
                   "output_tokens": 1300, "output_tokens_details": {"reasoning_tokens": 832},
                   "total_tokens": 3013}}
# batch-output.jsonl at half the price, each line with its own model (worked out in
# src/protocol/batch_results/tests.rs): (669.6 + 10,625 + 0.26) µ$ / 2.
BATCH_OUTPUT_USD = 0.00564743


class Mock(http.server.BaseHTTPRequestHandler):
    """Answers the OpenAI API's POST endpoints with the fixtures, and Anthropic's /v1/messages;
    GET a Batch object and its output file."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/v1/batches/batch_e2e":
            answer, kind = json.dumps(BATCH).encode(), "application/json"
        elif path == "/v1/files/file-out/content":
            answer, kind = (FIXTURES / "batch-output.jsonl").read_bytes(), "application/octet-stream"
        else:
            answer, kind = b"", "text/plain"
        self.send_response(200 if answer else 404)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.loads(raw or b"{}")
        stream = body.get("stream") is True
        path = self.path.split("?")[0]
        if path == "/v1/responses":
            if b"e2e:huge" in raw:
                answer = huge_completed_stream()
            else:
                answer = (FIXTURES / ("responses-stream.sse" if stream else "responses.json")).read_bytes()
        elif path == "/v1/chat/completions":
            with_usage = (body.get("stream_options") or {}).get("include_usage") is True
            name = ("chat-stream-usage.sse" if with_usage else "chat-stream-no-usage.sse") if stream else "chat.json"
            answer = (FIXTURES / name).read_bytes()
        elif path == "/v1/embeddings":
            answer = (FIXTURES / "embeddings.json").read_bytes()
        elif path == "/v1/messages":
            answer = ANTHROPIC_MESSAGE.read_bytes()
        else:
            self.send_response(404)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream" if stream else "application/json")
        self.send_header("content-length", str(len(answer)))
        self.send_header("x-ratelimit-remaining-requests", "4999")
        self.end_headers()
        self.wfile.write(answer)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_sluice(scratch, name, mock_port, extra=""):
    port = free_port()
    settings = pathlib.Path(scratch) / f"{name}.toml"
    settings.write_text(
        f'listen = "127.0.0.1:{port}"\nshutdown_grace_s = 5\n[stats]\nstate_file = ""\n'
        f'[store]\npath = ""\n'
        f'[[routes]]\nprefix = "/openai/v1"\nupstream = "http://127.0.0.1:{mock_port}/v1"\n'
        f'protocol = "openai"\n'
        f'[[routes]]\nprefix = "/anthropic"\nupstream = "http://127.0.0.1:{mock_port}"\n'
        f"{extra}"
    )
    log = open(pathlib.Path(scratch) / f"sluice-{name}.log", "wb")
    env = {"PATH": os.environ.get("PATH", ""), "E2E_ACCESS_ALICE": ALICE}
    process = subprocess.Popen([BIN, "--settings", str(settings)], stderr=log, cwd=scratch, env=env)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(base + "/healthz", timeout=2)
            return process, base
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"sluice ({name}) did not start; see {log.name}")


def stats(base):
    with urllib.request.urlopen(base + "/stats", timeout=10) as answer:
        return json.load(answer)


def counted_since(base, before, requests=1):
    """/stats totals added since `before`, once `requests` more requests have been counted."""
    deadline = time.time() + 10
    while True:
        now = stats(base)
        totals = now["totals"]
        if totals["requests"] >= before["requests"] + requests or time.time() > deadline:
            delta = {field: totals[field] - before[field] for field in COUNTED}
            delta["cost_usd"] = totals["cost_usd"] - before["cost_usd"]
            return delta, now


def expected_counters(usage):
    """What sluice counts for an SDK's final usage (a dict, Responses or Chat/Embeddings names)."""
    if "input_tokens" in usage:
        prompt, output = usage["input_tokens"], usage.get("output_tokens") or 0
        prompt_details = usage.get("input_tokens_details") or {}
        output_details = usage.get("output_tokens_details") or {}
    else:
        prompt, output = usage["prompt_tokens"], usage.get("completion_tokens") or 0
        prompt_details = usage.get("prompt_tokens_details") or {}
        output_details = usage.get("completion_tokens_details") or {}
    cached = prompt_details.get("cached_tokens") or 0
    written = prompt_details.get("cache_write_tokens") or 0
    return {"requests": 1, "errors": 0, "input_tokens": prompt - cached - written,
            "output_tokens": output, "cache_creation_input_tokens": written,
            "cache_read_input_tokens": cached,
            "reasoning_output_tokens": output_details.get("reasoning_tokens") or 0,
            "usage_missing": 0}


# ---- the Python SDK ----

def py_client(base, access=None, key=CLIENT_KEY):
    headers = {"x-sluice-key": access} if access else None
    return openai.OpenAI(base_url=base + "/openai/v1", api_key=key, default_headers=headers)


def py_usage(op, base, access=None):
    """Runs one operation with the Python SDK; returns its final usage as a plain dict."""
    client = py_client(base, access)
    if op == "responses":
        return client.responses.create(model="gpt-5.5", input="ping").usage.model_dump()
    if op in ("responses-stream", "responses-huge"):
        text = "e2e:huge" if op == "responses-huge" else "ping"
        usage = None
        for event in client.responses.create(model="gpt-5.3-codex", input=text, stream=True):
            if event.type == "response.completed":
                usage = event.response.usage.model_dump()
        return usage
    if op == "chat-stream":
        usage = None
        stream = client.chat.completions.create(
            model="gpt-5.4", messages=[{"role": "user", "content": "ping"}], stream=True,
            stream_options={"include_usage": True})
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage.model_dump()
        return usage
    if op == "embeddings":
        return client.embeddings.create(model="text-embedding-3-small", input="ping").usage.model_dump()
    raise ValueError(op)


def py_error(base, access=None, size=0):
    """The error the Python SDK raises for a Responses request: (class name, status, message)."""
    try:
        py_client(base, access).responses.create(model="gpt-5.5", input="x" * size or "ping")
    except openai.APIStatusError as err:
        return type(err).__name__, err.status_code, str(err)
    return None, None, "no error raised"


# ---- the Node SDK (openai_sdk.mjs prints one JSON line) ----

def node(op, base, access=""):
    run = subprocess.run([NODE, str(NODE_CLIENT), op, base + "/openai/v1", CLIENT_KEY, access],
                         capture_output=True, text=True, timeout=120, cwd=HERE)
    if run.returncode != 0:
        raise RuntimeError(f"node {op}: exit {run.returncode}\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def node_usage(op, base, access=""):
    return node(op, base, access)["usage"]


def node_error(base, access="", size=0):
    err = node(f"error:{size}", base, access)["error"]
    return err["class"], err["status"], err["message"]


# ---- the checks ----

def usage_checks(base):
    for sdk, run in (("python", py_usage), ("node", node_usage)):
        ops = ["responses", "responses-stream", "responses-huge", "chat-stream", "embeddings"]
        for op in ops:
            before = stats(base)["totals"]
            try:
                usage = run(op, base)
            except Exception as err:  # noqa: BLE001 - reported as the check's failure
                check(f"{sdk} SDK {op}: counted as the SDK reports it", False, repr(err))
                continue
            counted, _ = counted_since(base, before)
            want = expected_counters(usage) if usage else None
            check(f"{sdk} SDK {op}: /stats counted what the SDK's own usage says",
                  usage is not None and counted == {**want, "cost_usd": counted["cost_usd"]}
                  and counted["cost_usd"] > 0,
                  f"sdk usage {usage}\nexpected {want}\ncounted {counted}")


def batch_checks(base):
    client = py_client(base)
    before = stats(base)["totals"]
    batch = client.batches.retrieve("batch_e2e")
    counted, _ = counted_since(base, before)
    check("python SDK batches.retrieve: the Batch object's summed usage counts no tokens",
          batch.usage is not None and batch.usage.input_tokens > 0 and counted["requests"] == 1
          and counted["input_tokens"] == counted["output_tokens"] == 0 and counted["cost_usd"] == 0,
          counted)
    before = stats(base)["totals"]
    lines = [json.loads(line) for line in client.files.content(batch.output_file_id).text.splitlines()]
    usages = [line["response"]["body"]["usage"] for line in lines
              if line.get("response") and line["response"]["status_code"] == 200]
    want = {field: 0 for field in COUNTED}
    for usage in usages:
        for field, value in expected_counters(usage).items():
            want[field] += value
    want["requests"] = 1
    counted, _ = counted_since(base, before)
    check(f"python SDK files.content: /stats counted the {len(usages)} answered lines of the "
          "output file, as the SDK reads them",
          len(usages) == 3 and {**want, "cost_usd": counted["cost_usd"]} == counted, (want, counted))
    check(f"python SDK files.content: priced at the batch rate ({BATCH_OUTPUT_USD} USD)",
          abs(counted["cost_usd"] - BATCH_OUTPUT_USD) < 1e-9, counted["cost_usd"])


def refusal_checks(team, quota_usd):
    for sdk, error in (("python", py_error), ("node", node_error)):
        kind, status, message = error(team)
        check(f"{sdk} SDK: no access key -> its AuthenticationError (401) with sluice's message",
              kind == "AuthenticationError" and status == 401 and "sluice:" in message,
              (kind, status, message))
        kind, status, message = error(team, ALICE, BODY_LIMIT + 1024)
        check(f"{sdk} SDK: body over the limit -> its status error 413 with sluice's message",
              status == 413 and kind in ("APIStatusError", "APIError") and "sluice:" in message,
              (kind, status, message))

    # Cross-provider: an OpenAI and an Anthropic request fill alice's quota together.
    before = stats(team)["totals"]
    py_client(team, ALICE).responses.create(model="gpt-5.5", input="ping")
    claude = anthropic.Anthropic(base_url=team + "/anthropic", api_key=ANTHROPIC_KEY,
                                 default_headers={"x-sluice-key": ALICE})
    claude.messages.create(model="claude-sonnet-4-6", max_tokens=16,
                           messages=[{"role": "user", "content": "ping"}])
    counted, now = counted_since(team, before, requests=2)
    by_provider = now.get("by_provider", {})
    quota = now["quotas"][0]
    used = quota["subjects"][0]["used"]["usd"]
    openai_usd = by_provider.get("openai", {}).get("cost_usd", 0)
    anthropic_usd = by_provider.get("anthropic", {}).get("cost_usd", 0)
    check("quota: alice's spend is her OpenAI and Anthropic spend together",
          openai_usd > 0 and anthropic_usd > 0 and abs(used - (openai_usd + anthropic_usd)) < 1e-9
          and used >= quota_usd,
          f"used {used}, limit {quota_usd}, by_provider openai {openai_usd} anthropic {anthropic_usd}")
    for sdk, error in (("python", py_error), ("node", node_error)):
        kind, status, message = error(team, ALICE)
        check(f"{sdk} SDK: quota spent (partly on Anthropic) -> its RateLimitError with sluice's message",
              kind == "RateLimitError" and status == 429 and "sluice: quota alice-usd" in message,
              (kind, status, message))
    try:
        claude.messages.create(model="claude-sonnet-4-6", max_tokens=16,
                               messages=[{"role": "user", "content": "ping"}])
        result = None
    except anthropic.RateLimitError as err:
        result = str(err)
    check("anthropic SDK: the same quota, spent partly on OpenAI, refuses it too",
          result is not None and "sluice: quota alice-usd" in result, result)
    refused = stats(team)["quotas"][0]["refused"]
    check("quota refusals are not retried by the SDKs (one refusal per call)", refused == 3,
          f"refused {refused}")


def main():
    mock = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mock)
    threading.Thread(target=mock.serve_forever, daemon=True).start()
    port = mock.server_port
    print(f"openai {openai.__version__}, anthropic {anthropic.__version__}, node client "
          f"{node('version', 'http://127.0.0.1:1')['version']}", flush=True)
    processes = []
    with tempfile.TemporaryDirectory() as scratch:
        try:
            sluice, open_base = start_sluice(scratch, "open", port)
            processes.append(sluice)
            usage_checks(open_base)
            batch_checks(open_base)
            # The cost of one Responses request and one Anthropic message, measured here, sets
            # the quota between them: the Responses request alone stays under it, both pass it.
            before = stats(open_base)["totals"]
            py_usage("responses", open_base)
            responses_usd = counted_since(open_base, before)[0]["cost_usd"]
            before = stats(open_base)["totals"]
            anthropic.Anthropic(base_url=open_base + "/anthropic", api_key=ANTHROPIC_KEY).messages.create(
                model="claude-sonnet-4-6", max_tokens=16, messages=[{"role": "user", "content": "ping"}])
            message_usd = counted_since(open_base, before)[0]["cost_usd"]
            quota_usd = responses_usd + message_usd / 2
            team_toml = (
                '[access]\nheader = "x-sluice-key"\n[[access.keys]]\nname = "alice"\n'
                'key_env = "E2E_ACCESS_ALICE"\n'
                f"[limits]\nmax_request_body_bytes = {BODY_LIMIT}\n"
                f'[[quotas]]\nname = "alice-usd"\ncaller = "alice"\nwindow = "30d"\n'
                f"max_usd = {quota_usd!r}\n"
            )
            sluice, team_base = start_sluice(scratch, "team", port, team_toml)
            processes.append(sluice)
            refusal_checks(team_base, quota_usd)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=20)
            mock.shutdown()
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
