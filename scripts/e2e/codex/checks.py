#!/usr/bin/env python3
"""Codex CLI through sluice, end to end, against mock_openai.py (both upstreams) on 127.0.0.1.

usage: checks.py --codex BIN --sluice BIN --python VENV_PYTHON --work DIR

sluice runs with the route a team would use: `/openai/v1`, `protocol = "openai"`, `upstream` =
the mock's API listener, `subscription_upstream` = the mock's ChatGPT-backend listener, and a
server key. Between Codex and sluice a byte tap keeps everything Codex sends, so each run checks
that the mock received exactly that (headers other than host and the hop's own, and the body or
every WebSocket message), whose credential went where, and what /stats counted.

Runs of `codex exec` (non-interactive), each in a scratch HOME:
  direct        API key (CODEX_API_KEY) straight to the mock: the mock and Codex agree
  api-ws        API key through sluice (`openai_base_url`), over the WebSocket
  api-https     API key through sluice (a provider without WebSockets), over HTTPS + SSE
  chatgpt-ws    ChatGPT login (a test auth.json) through sluice (`openai_base_url`), WebSocket
  chatgpt-https ChatGPT login, the mock refusing upgrades: Codex's own fallback to HTTPS (zstd)
  chatgpt-provider  ChatGPT login, a provider without WebSockets: HTTPS from the start
  team-*        a sluice with access keys: the key in a provider's env_http_headers (API key
                and ChatGPT login), and the access key as the bearer for the server key
  quota-*       max_requests = 1: the second run stops with sluice's message (WebSocket, HTTPS)
Prints PASS/FAIL per check and ends with "N passed, M failed"; exits 1 on any failure.
Every process listens on 127.0.0.1; run.sh puts the whole run in a network namespace of its own.
"""

import argparse
import hashlib
import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
API_KEY = "sk-test-codex-e2e-" + os.urandom(6).hex()
SERVER_KEY = "sk-test-codex-e2e-server-" + os.urandom(6).hex()
ACCESS_KEY = "sluice-e2e-codex-alice-" + os.urandom(6).hex()
ACCOUNT = "acct-test-0001"
PROMPT = "say pong"
PREFIX = "/openai/v1"
# The usage every answer of the mock reports (its defaults): 1200 input of which 200 cached,
# 30 output of which 10 reasoning.
USAGE = {"input_tokens": 1000, "cache_read_input_tokens": 200, "output_tokens": 30,
         "reasoning_output_tokens": 10}
# Headers of one hop only: sluice removes or makes them anew (SPEC, Forwarding), as does the
# WebSocket handshake it makes with the upstream.
HOP = {"host", "connection", "keep-alive", "proxy-authorization", "proxy-connection", "te",
       "trailer", "transfer-encoding", "upgrade"}
HANDSHAKE = {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"}
# sluice's HTTP/1.1 client (awc) writes a `date` on every request that has none (HTTP allows a
# client to send one; awc has no switch for it): the one header added, and checked to be that.
ADDED = {"date"}
SECRET_HEADERS = {"authorization", "x-api-key", "api-key", "x-sluice-key", "cookie"}

results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'PASS' if ok else 'FAIL'}: {name}" + (f" ({detail})" if detail and not ok else ""),
          flush=True)


def sha(data):
    if isinstance(data, str):
        data = data.encode("latin-1")
    return "sha256:" + hashlib.sha256(data).hexdigest()


class OutboundTrap(socketserver.StreamRequestHandler):
    """The HTTPS_PROXY Codex is given: notes where it tried to go beyond loopback, refuses."""
    attempts = []

    def handle(self):
        line = self.rfile.readline(4096).decode("latin-1").strip()
        OutboundTrap.attempts.append(line)
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")


def start_trap():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), OutboundTrap)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


class Tap:
    """A TCP relay in front of sluice that keeps every byte Codex sends, per connection."""

    def __init__(self, target):
        self.target = target
        self.sent = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            kept = bytearray()
            self.sent.append(kept)
            threading.Thread(target=pump, args=(client, upstream, kept), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, None), daemon=True).start()

    def requests(self):
        """Every request Codex sent through the tap, in order, as `parse_requests` reads them."""
        out = []
        for kept in list(self.sent):
            out += parse_requests(bytes(kept))
        return out


def pump(source, sink, kept):
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            if kept is not None:
                kept += data
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (sink, source):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def parse_requests(data):
    """HTTP/1.1 requests in a client's byte stream: method, target, headers (secret values
    hashed as the mock logs them), the body as sent (de-chunked), and for a WebSocket upgrade
    the messages the client sent on the socket."""
    out = []
    pos = 0
    while True:
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            return out
        lines = data[pos:end].decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers.append([name, sha(value) if name in SECRET_HEADERS else value])
        pos = end + 4
        named = dict(headers)
        request = {"method": method, "target": target, "headers": headers}
        if named.get("upgrade", "").lower() == "websocket":
            request["messages"] = ws_messages(data[pos:])
            out.append(request)
            return out
        if "chunked" in named.get("transfer-encoding", "").lower():
            body = bytearray()
            while True:
                line_end = data.index(b"\r\n", pos)
                size = int(data[pos:line_end].split(b";")[0], 16)
                pos = line_end + 2
                body += data[pos:pos + size]
                pos += size + 2
                if size == 0:
                    break
            body = bytes(body)
        else:
            size = int(named.get("content-length", "0"))
            body = data[pos:pos + size]
            pos += size
        request["body"] = body
        out.append(request)


def ws_messages(data):
    """The messages of a client's WebSocket frames (unmasked; continuations joined)."""
    messages, pos, partial = [], 0, None
    while pos + 2 <= len(data):
        first, second = data[pos], data[pos + 1]
        opcode, length, pos = first & 0x0F, second & 0x7F, pos + 2
        if length == 126:
            length, pos = int.from_bytes(data[pos:pos + 2], "big"), pos + 2
        elif length == 127:
            length, pos = int.from_bytes(data[pos:pos + 8], "big"), pos + 8
        mask = data[pos:pos + 4] if second & 0x80 else b"\0\0\0\0"
        pos += 4 if second & 0x80 else 0
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data[pos:pos + length]))
        pos += length
        if opcode == 8:
            break
        if opcode in (1, 2):
            partial = (opcode, bytearray(payload))
        elif opcode == 0 and partial:
            partial[1].extend(payload)
        else:
            continue
        if first & 0x80 and partial:
            messages.append((partial[0], bytes(partial[1])))
            partial = None
    return messages


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


class Run:
    def __init__(self, args):
        self.args = args
        self.work = args.work
        self.procs = []
        self.proxy_port = start_trap()
        self.token = subprocess.run(
            [args.python, os.path.join(HERE, "make_auth.py"), self.auth_json, ACCOUNT],
            capture_output=True, text=True, check=True).stdout.strip()

    @property
    def auth_json(self):
        return os.path.join(self.work, "auth.json")

    def start(self, argv, log, env=None):
        proc = subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    def stop_all(self):
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def mock(self, name, extra=()):
        api, chatgpt, backend = free_port(), free_port(), free_port()
        log = os.path.join(self.work, f"mock-{name}.jsonl")
        self.start([self.args.python, os.path.join(HERE, "mock_openai.py"),
                    "--api-port", str(api), "--chatgpt-port", str(chatgpt),
                    "--backend-port", str(backend), "--log", log,
                    "--api-key", API_KEY, "--api-key", SERVER_KEY,
                    "--chatgpt-token", self.token, "--account-id", ACCOUNT, *extra],
                   os.path.join(self.work, f"mock-{name}.out"))
        assert wait_port(api) and wait_port(chatgpt) and wait_port(backend), "no mock"
        return Mock(api, chatgpt, backend, log)

    def sluice(self, name, mock, extra=""):
        """A sluice with the team's `/openai/v1` route in front of `mock`, and a tap in front
        of it; returns the tap (Codex's way in) and sluice's port."""
        port = free_port()
        settings = os.path.join(self.work, f"sluice-{name}.toml")
        with open(settings, "w") as f:
            f.write(f"""listen = "127.0.0.1:{port}"
shutdown_grace_s = 2
[[routes]]
prefix = "{PREFIX}"
upstream = "http://127.0.0.1:{mock.api}/v1"
subscription_upstream = "http://127.0.0.1:{mock.chatgpt}/backend-api/codex"
protocol = "openai"
server_key_env = "E2E_SERVER_KEY"
[stats]
state_file = ""
[store]
path = "{self.work}/sluice-{name}.db"
{extra}""")
        env = {"PATH": os.environ["PATH"], "RUST_LOG": "info", "E2E_ACCESS_ALICE": ACCESS_KEY,
               "E2E_SERVER_KEY": SERVER_KEY}
        self.start([self.args.sluice, "--settings", settings],
                   os.path.join(self.work, f"sluice-{name}.log"), env=env)
        assert wait_port(port), f"sluice {name} did not start"
        return Tap(port), port

    def codex(self, name, base, mode, mock, provider_lines=None, websockets=True,
              timeout=90, extra_env=None):
        """`codex exec` with `openai_base_url = base`, or with a custom provider at `base`
        when `provider_lines` is given. mode: "api" (CODEX_API_KEY), "chatgpt" (auth.json), or
        "access-key" (neither: the provider's env_key names the access key's variable)."""
        home = os.path.join(self.work, f"home-{name}")
        shutil.rmtree(home, ignore_errors=True)
        codex_home = os.path.join(home, ".codex")
        os.makedirs(codex_home)
        lines = ['cli_auth_credentials_store = "file"',
                 f'chatgpt_base_url = "http://127.0.0.1:{mock.backend}/backend-api/"',
                 "check_for_update_on_startup = false"]
        if provider_lines is None:
            lines.append(f'openai_base_url = "{base}"')
        else:
            lines += ['model_provider = "sluice"', "[model_providers.sluice]", 'name = "sluice"',
                      f'base_url = "{base}"', 'wire_api = "responses"',
                      f"supports_websockets = {str(websockets).lower()}", *provider_lines]
        with open(os.path.join(codex_home, "config.toml"), "w") as f:
            f.write("\n".join(lines) + "\n")
        if mode == "chatgpt":
            shutil.copy(self.auth_json, os.path.join(codex_home, "auth.json"))
        proxy = f"http://127.0.0.1:{self.proxy_port}"
        env = {"PATH": os.environ["PATH"], "HOME": home, "CODEX_HOME": codex_home,
               "CODEX_REFRESH_TOKEN_URL_OVERRIDE":
                   f"http://127.0.0.1:{mock.backend}/oauth/token",
               # Anything Codex tries to reach beyond loopback goes to a proxy that logs and
               # refuses it (and in run.sh's namespace there is no way out anyway).
               "HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "ALL_PROXY": proxy,
               "NO_PROXY": "127.0.0.1,localhost"}
        if mode == "api":
            env["CODEX_API_KEY"] = API_KEY
        env.update(extra_env or {})
        started = time.time()
        done = subprocess.run([self.args.codex, "exec", "--skip-git-repo-check", PROMPT],
                              env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd=home)
        with open(os.path.join(self.work, f"codex-{name}.err"), "w") as f:
            f.write(done.stderr)
        return done, time.time() - started


class Mock:
    def __init__(self, api, chatgpt, backend, log):
        self.api, self.chatgpt, self.backend, self.log = api, chatgpt, backend, log

    def entries(self, **match):
        out = []
        if not os.path.exists(self.log):
            return out
        for line in open(self.log):
            entry = json.loads(line)
            if all(entry.get(k) == v for k, v in match.items()):
                out.append(entry)
        return out

    def requests(self):
        """What the mock received, in order: HTTP requests and upgrades, each upgrade with the
        text messages that came on its socket (the mock serves one socket at a time here)."""
        out = []
        for entry in self.entries():
            if entry["listener"] == "backend":
                continue
            if entry["kind"] in ("http", "ws_open", "refresh"):
                out.append(dict(entry, messages=[]))
            elif entry["kind"] == "ws_frame" and entry.get("frame") == "text" and out:
                opened = [r for r in out if r["kind"] == "ws_open"
                          and r["listener"] == entry["listener"]]
                opened[-1]["messages"].append(entry["sha256"])
        return out


def stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as answer:
        return json.load(answer)


def stats_after(port, key, n, seconds=10):
    """/stats once `by_status[key]` has reached n (records are counted off the request path)."""
    deadline = time.time() + seconds
    while True:
        body = stats(port)
        if body["by_status"].get(key, 0) >= n or time.time() > deadline:
            return body
        time.sleep(0.1)


def stable(headers, drop=()):
    return sorted((n, v) for n, v in headers if n not in HOP and n not in drop)


def check_forwarded(name, tap, mock, listener):
    """Everything Codex sent through sluice reached `listener` of the mock as sent."""
    sent = tap.requests()
    got = mock.requests()
    check(f"{name}: every request Codex sent reached the {listener} mock, nothing else",
          len(sent) == len(got) and all(r["listener"] == listener for r in got),
          f"sent {[(r['method'], r['target']) for r in sent]}, mock got "
          f"{[(r['listener'], r['method'], r['path']) for r in got]}")
    base = "/v1" if listener == "api" else "/backend-api/codex"
    # Codex sends some requests at the same time on connections of their own (its model list
    # beside the upgrade), so each request it sent is matched with one the mock got.
    unmatched = list(got)
    problems = []
    for codex in sent:
        candidates = [(upstream, differences(codex, upstream, base)) for upstream in unmatched]
        same = [upstream for upstream, found in candidates if not found]
        if same:
            unmatched.remove(same[0])
        else:
            closest = min((found for _, found in candidates), key=len, default=["nothing"])
            problems.append(f"{codex['method']} {codex['target']}: {'; '.join(closest)}")
    check(f"{name}: headers (but host, the hop's own and a date) and bodies/messages byte for byte",
          not problems, "; ".join(problems)[:1500])
    return sent


def differences(codex, upstream, base):
    """How what the mock got differs from what Codex sent (empty: the same)."""
    found = []
    path, _, query = codex["target"].partition("?")
    if (codex["method"] != upstream["method"] or base + path[len(PREFIX):] != upstream["path"]
            or query != upstream["query"]):
        return [f"went to {upstream['method']} {upstream['path']}?{upstream['query']}"]
    drop = HANDSHAKE if "messages" in codex else ()
    added = [h for h in upstream["headers"] if h[0] in ADDED
             and h[0] not in {n for n, _ in codex["headers"]}]
    if len(added) > 1:
        found.append(f"more than one date added: {added}")
    upstream_headers = [h for h in upstream["headers"] if h not in added]
    if stable(codex["headers"], drop) != stable(upstream_headers, drop):
        extra = set(map(tuple, upstream_headers)) - set(map(tuple, codex["headers"]))
        lost = set(map(tuple, codex["headers"])) - set(map(tuple, upstream_headers))
        found.append(f"headers added {sorted(extra - hop_pairs(extra, drop))}"
                     f" lost {sorted(lost - hop_pairs(lost, drop))}")
    if "messages" in codex:
        texts = [sha(body) for kind, body in codex["messages"] if kind == 1]
        if texts != upstream["messages"]:
            found.append(f"socket messages differ: {len(texts)} sent, "
                         f"{len(upstream['messages'])} received")
    elif sha(codex["body"]) != upstream.get("body_sha256"):
        found.append(f"body differs ({len(codex['body'])} bytes sent, "
                     f"{upstream.get('body_len')} received)")
    return found


def hop_pairs(pairs, drop):
    return {p for p in pairs if p[0] in HOP or p[0] in drop}


def check_metered(name, port, sent, source, turns=1):
    """/stats counted exactly the mock's usage for `turns` responses, under Codex's session,
    client `codex`, provider `openai` and the credential's source."""
    body = stats_after(port, "200", turns)
    totals = body["totals"]
    counted = {k: totals.get(k) for k in USAGE}
    check(f"{name}: /stats counted the tokens the mock sent (input, cached, output, reasoning)",
          counted == {k: v * turns for k, v in USAGE.items()}, json.dumps(totals))
    inference = [r for r in sent if r["target"].split("?")[0].endswith("/responses")]
    session = next((v for n, v in inference[-1]["headers"] if n == "session-id"), None)
    check(f"{name}: by_session has Codex's session-id",
          session and body["by_session"].get(session, {}).get("output_tokens") == 30 * turns,
          f"{session}: {json.dumps(body['by_session'])}")
    check(f"{name}: by_client codex, by_provider openai, by_source {source}",
          body["by_client"].get("codex", {}).get("requests") == totals["requests"]
          and body["by_provider"].get("openai", {}).get("requests") == totals["requests"]
          and body["by_source"].get(source, {}).get("output_tokens") == 30 * turns,
          json.dumps({k: body[k] for k in ("by_client", "by_provider", "by_source")}))
    return body


def check_windows(name, body, five_h, seven_d):
    windows = {}
    for key, state in body.get("rate_limits", {}).items():
        if key.startswith("client_oauth:"):
            windows.update(state.get("windows", {}))
    check(f"{name}: the plan windows the mock sent (5h {five_h:.1%}, 7d {seven_d:.1%}) under "
          "the login's credential",
          windows.get("5h", {}).get("utilization") == five_h
          and windows.get("7d", {}).get("utilization") == seven_d
          and windows["5h"].get("resets_at") and windows["7d"].get("resets_at"),
          json.dumps(body["rate_limits"]))


def check_credentials_kept(name, mock, token):
    """The login's token went only to the ChatGPT mock, and the server key nowhere."""
    api_side = json.dumps(mock.entries(listener="api"))
    everything = json.dumps(mock.entries())
    check(f"{name}: the token never reached the API mock, the server key never went anywhere",
          sha(f"Bearer {token}") not in api_side and SERVER_KEY not in everything
          and sha(f"Bearer {SERVER_KEY}") not in everything)


def check_answered(name, done, fallback):
    check(f"{name}: codex exec answers", done.returncode == 0
          and "pong from the mock" in done.stdout, done.stderr[-400:])
    fell_back = "Falling back from WebSockets to HTTPS" in done.stderr
    check(f"{name}: {'falls back to HTTPS' if fallback else 'no fallback to HTTPS'}",
          fell_back == fallback, done.stderr[-400:])


def scenarios(run):
    token = run.token

    # What Codex sends with nothing in between: the mock and Codex agree.
    mock = run.mock("direct")
    done, _ = run.codex("direct", f"http://127.0.0.1:{mock.api}/v1", "api", mock)
    check("direct: codex exec answers from the mock", done.returncode == 0
          and "pong from the mock" in done.stdout, done.stderr[-400:])

    # API key through sluice, over the WebSocket (Codex's first choice).
    mock = run.mock("api-ws")
    tap, port = run.sluice("api-ws", mock)
    done, secs = run.codex("api-ws", f"http://127.0.0.1:{tap.port}{PREFIX}", "api", mock)
    check_answered("api-ws", done, fallback=False)
    sent = check_forwarded("api-ws", tap, mock, "api")
    check("api-ws: one socket, a prewarm then the turn on it",
          [r["method"] for r in sent] == ["GET"] and len(sent[0].get("messages", [])) == 2,
          f"{[(r['method'], r['target'], len(r.get('messages', []))) for r in sent]}")
    check("api-ws: the client's key reached the API mock as sent",
          ["authorization", sha(f"Bearer {API_KEY}")] in mock.requests()[0]["headers"])
    body = check_metered("api-ws", port, sent, "client_api_key")
    check("api-ws: one record, the prewarm is none", body["totals"]["requests"] == 1,
          json.dumps(body["totals"]))
    print(f"     (codex exec took {secs:.1f} s through sluice over the WebSocket)")

    # API key over HTTPS: a provider without WebSockets.
    mock = run.mock("api-https")
    tap, port = run.sluice("api-https", mock)
    done, _ = run.codex("api-https", f"http://127.0.0.1:{tap.port}{PREFIX}", "api", mock,
                        provider_lines=['env_key = "CODEX_API_KEY"'], websockets=False)
    check_answered("api-https", done, fallback=False)
    sent = check_forwarded("api-https", tap, mock, "api")
    check("api-https: one POST with an SSE answer",
          [(r["method"], r["target"]) for r in sent] == [("POST", f"{PREFIX}/responses")],
          f"{[(r['method'], r['target']) for r in sent]}")
    check_metered("api-https", port, sent, "client_api_key")

    # ChatGPT login over the WebSocket: to subscription_upstream, token untouched.
    mock = run.mock("chatgpt-ws")
    tap, port = run.sluice("chatgpt-ws", mock)
    done, _ = run.codex("chatgpt-ws", f"http://127.0.0.1:{tap.port}{PREFIX}", "chatgpt", mock)
    check_answered("chatgpt-ws", done, fallback=False)
    sent = check_forwarded("chatgpt-ws", tap, mock, "chatgpt")
    upgrades = [r for r in mock.requests() if r["kind"] == "ws_open"]
    check("chatgpt-ws: one socket to the ChatGPT mock with the token and account id as sent",
          len(upgrades) == 1 and upgrades[0]["status"] == 101
          and ["authorization", sha(f"Bearer {token}")] in upgrades[0]["headers"]
          and ["chatgpt-account-id", ACCOUNT] in upgrades[0]["headers"],
          json.dumps(upgrades)[:600])
    check_credentials_kept("chatgpt-ws", mock, token)
    body = check_metered("chatgpt-ws", port, sent, "client_oauth")
    # The socket's codex.rate_limits event (43.5 %, 8 %) came after the upgrade's headers.
    check_windows("chatgpt-ws", body, 0.435, 0.08)

    # ChatGPT login over HTTPS: the mock refuses upgrades, Codex falls back by itself; its
    # POST bodies are zstd.
    mock = run.mock("chatgpt-https", ["--no-websocket"])
    tap, port = run.sluice("chatgpt-https", mock)
    done, secs = run.codex("chatgpt-https", f"http://127.0.0.1:{tap.port}{PREFIX}", "chatgpt",
                           mock)
    check_answered("chatgpt-https", done, fallback=True)
    sent = check_forwarded("chatgpt-https", tap, mock, "chatgpt")
    posts = [r for r in mock.requests() if r["method"] == "POST"]
    check("chatgpt-https: one zstd POST, its model read from the compressed body",
          len(posts) == 1 and posts[0]["body_encoding"] == "zstd", json.dumps(posts)[:400])
    check_credentials_kept("chatgpt-https", mock, token)
    body = check_metered("chatgpt-https", port, sent, "client_oauth")
    check("chatgpt-https: by_model has the model of the zstd body",
          body["by_model"].get(posts[0]["body"]["model"], {}).get("requests") == 1,
          json.dumps(body["by_model"]))
    check_windows("chatgpt-https", body, 0.42, 0.075)
    print(f"     (codex exec took {secs:.1f} s with its fallback to HTTPS)")

    # ChatGPT login over HTTPS from the start: a provider without WebSockets (plain JSON).
    mock = run.mock("chatgpt-provider")
    tap, port = run.sluice("chatgpt-provider", mock)
    done, _ = run.codex("chatgpt-provider", f"http://127.0.0.1:{tap.port}{PREFIX}", "chatgpt",
                        mock, provider_lines=["requires_openai_auth = true"], websockets=False)
    check_answered("chatgpt-provider", done, fallback=False)
    sent = check_forwarded("chatgpt-provider", tap, mock, "chatgpt")
    check("chatgpt-provider: one POST, no upgrade",
          [r["method"] for r in sent if r["target"].startswith(f"{PREFIX}/responses")]
          == ["POST"], f"{[(r['method'], r['target']) for r in sent]}")
    check_credentials_kept("chatgpt-provider", mock, token)
    body = check_metered("chatgpt-provider", port, sent, "client_oauth")
    check_windows("chatgpt-provider", body, 0.42, 0.075)

    # A team sluice: every caller needs an access key; it never goes upstream.
    mock = run.mock("team")
    tap, port = run.sluice("team", mock,
                           '[access]\nheader = "x-sluice-key"\n[[access.keys]]\n'
                           'name = "alice"\nkey_env = "E2E_ACCESS_ALICE"\n')
    base = f"http://127.0.0.1:{tap.port}{PREFIX}"
    in_header = 'env_http_headers = { "x-sluice-key" = "SLUICE_KEY" }'
    done, _ = run.codex("team-header", base, "api", mock,
                        provider_lines=['env_key = "CODEX_API_KEY"', in_header],
                        extra_env={"SLUICE_KEY": ACCESS_KEY})
    check("team-header: own API key, access key in env_http_headers: answers",
          done.returncode == 0 and "pong from the mock" in done.stdout, done.stderr[-400:])
    done, _ = run.codex("team-chatgpt", base, "chatgpt", mock,
                        provider_lines=["requires_openai_auth = true", in_header],
                        extra_env={"SLUICE_KEY": ACCESS_KEY})
    check("team-chatgpt: ChatGPT login, access key in env_http_headers: answers",
          done.returncode == 0 and "pong from the mock" in done.stdout, done.stderr[-400:])
    done, _ = run.codex("team-bearer", base, "access-key", mock,
                        provider_lines=['env_key = "SLUICE_KEY"'],
                        extra_env={"SLUICE_KEY": ACCESS_KEY})
    check("team-bearer: the access key as Codex's API key (server key upstream): answers",
          done.returncode == 0 and "pong from the mock" in done.stdout, done.stderr[-400:])
    everything = json.dumps(mock.entries())
    check("team: the access key never reached the upstream",
          "x-sluice-key" not in everything and ACCESS_KEY not in everything
          and sha(ACCESS_KEY) not in everything and sha(f"Bearer {ACCESS_KEY}") not in everything)
    opens = mock.entries(kind="ws_open")
    auth = [(e["listener"], dict(e["headers"]).get("authorization")) for e in opens]
    check("team: each run's credential went where it belongs (own key, login, server key)",
          auth == [("api", sha(f"Bearer {API_KEY}")), ("chatgpt", sha(f"Bearer {token}")),
                   ("api", sha(f"Bearer {SERVER_KEY}"))], f"{auth}")
    body = stats_after(port, "200", 3)
    check("team: all three counted for alice, by source",
          body["by_caller"].get("alice", {}).get("output_tokens") == 90
          and all(body["by_source"].get(s, {}).get("requests", 0) >= 1
                  for s in ("client_api_key", "client_oauth", "server_key")),
          json.dumps({k: body[k] for k in ("by_caller", "by_source")}))

    # A quota of one response a day: the second run stops at once with sluice's message.
    quota = (f'[[quotas]]\nname = "one-a-day"\nroute = "{PREFIX}"\nwindow = "day"\n'
             "max_requests = 1\n")
    for transport, lines, websockets in (("ws", None, True),
                                         ("https", ['env_key = "CODEX_API_KEY"'], False)):
        mock = run.mock(f"quota-{transport}")
        tap, port = run.sluice(f"quota-{transport}", mock, quota)
        base = f"http://127.0.0.1:{tap.port}{PREFIX}"
        first, _ = run.codex(f"quota-{transport}-1", base, "api", mock, provider_lines=lines,
                             websockets=websockets)
        second, secs = run.codex(f"quota-{transport}-2", base, "api", mock,
                                 provider_lines=lines, websockets=websockets)
        check(f"quota-{transport}: the first run answers", first.returncode == 0,
              first.stderr[-300:])
        check(f"quota-{transport}: the second run shows sluice's message and stops at once",
              second.returncode != 0 and "sluice: quota one-a-day reached" in second.stderr
              and secs < 15, f"rc={second.returncode} {secs:.0f}s {second.stderr[-400:]}")
        turns = [e for e in mock.entries(listener="api")
                 if (e["kind"] == "ws_frame" and e["body"].get("type") == "response.create"
                     and e["body"].get("generate") is not False)
                 or (e["kind"] == "http" and e["method"] == "POST")]
        check(f"quota-{transport}: the refused response never went upstream", len(turns) == 1,
              f"{len(turns)}")
        refused = stats(port)["quotas"]
        check(f"quota-{transport}: /stats counts one refusal",
              refused[0]["subjects"][0]["refused"] == 1, json.dumps(refused))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--codex", required=True)
    parser.add_argument("--sluice", required=True)
    parser.add_argument("--python", required=True)
    parser.add_argument("--work", required=True)
    args = parser.parse_args()
    run = Run(args)
    try:
        scenarios(run)
    except Exception as err:  # noqa: BLE001 - a broken run is one failure, with its cause
        import traceback
        traceback.print_exc()
        check("the run itself", False, repr(err))
    finally:
        run.stop_all()
    hosts = sorted({line.split()[1] for line in OutboundTrap.attempts if " " in line})
    print(f"     (Codex itself tried to reach, and was refused: {', '.join(hosts) or 'nothing'})")
    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
