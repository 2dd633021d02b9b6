#!/usr/bin/env python3
"""Codex CLI through sluice, end to end, against mock_openai.py (both upstreams) on 127.0.0.1.

usage: checks.py --codex BIN --sluice BIN --python VENV_PYTHON --work DIR

Runs `codex exec` (non-interactive) in scratch HOMEs:
  direct   API key (CODEX_API_KEY) straight to the mock: what Codex sends when nothing is between
  api      API key through sluice (`openai_base_url`), over the WebSocket
  chatgpt  ChatGPT login (a test auth.json) through sluice, over the WebSocket
  team     API key through a sluice with access keys: the key in a provider's `env_http_headers`
  quota    a sluice with max_requests = 1: the second run is refused with sluice's message
Prints PASS/FAIL per check and ends with "N passed, M failed"; exits 1 on any failure.
Every process listens on 127.0.0.1; run.sh puts the whole run in a network namespace of its own.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import socketserver
import threading
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
API_KEY = "sk-test-codex-e2e-" + os.urandom(6).hex()
ACCESS_KEY = "sluice-e2e-codex-alice-" + os.urandom(6).hex()
PROMPT = "say pong"
# Headers whose values differ from one Codex run to the next (ids made per session or turn).
PER_RUN = {"x-client-request-id", "session-id", "thread-id", "x-codex-window-id",
           "x-codex-turn-metadata", "sec-websocket-key", "host"}

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'}: {name}" + (f" ({detail})" if detail and not ok else ""),
          flush=True)


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

    def mock(self, name, token, extra=()):
        api, chatgpt = free_port(), free_port()
        log = os.path.join(self.work, f"mock-{name}.jsonl")
        self.start([self.args.python, os.path.join(HERE, "mock_openai.py"),
                    "--api-port", str(api), "--chatgpt-port", str(chatgpt), "--log", log,
                    "--api-key", API_KEY, "--chatgpt-token", token, *extra],
                   os.path.join(self.work, f"mock-{name}.out"))
        assert wait_port(api) and wait_port(chatgpt), "mock did not start"
        return api, chatgpt, log

    def sluice(self, name, upstream, extra=""):
        port = free_port()
        settings = os.path.join(self.work, f"sluice-{name}.toml")
        with open(settings, "w") as f:
            f.write(f"""listen = "127.0.0.1:{port}"
shutdown_grace_s = 2
[[routes]]
prefix = "/openai/v1"
upstream = "{upstream}"
protocol = "none"
server_key_env = "E2E_NO_SERVER_KEY"
[stats]
state_file = ""
[store]
path = "{self.work}/sluice-{name}.db"
{extra}""")
        env = {"PATH": os.environ["PATH"], "RUST_LOG": "info", "E2E_ACCESS_ALICE": ACCESS_KEY}
        self.start([self.args.sluice, "--settings", settings],
                   os.path.join(self.work, f"sluice-{name}.log"), env=env)
        assert wait_port(port), f"sluice {name} did not start"
        return port

    def codex(self, name, base, mode, chatgpt_port, auth_json=None, provider_lines=None,
              timeout=90, extra_env=None):
        home = os.path.join(self.work, f"home-{name}")
        shutil.rmtree(home, ignore_errors=True)
        codex_home = os.path.join(home, ".codex")
        os.makedirs(codex_home)
        lines = ['cli_auth_credentials_store = "file"',
                 f'chatgpt_base_url = "http://127.0.0.1:{chatgpt_port}/backend-api/"',
                 "check_for_update_on_startup = false"]
        if provider_lines is None:
            lines.append(f'openai_base_url = "{base}"')
        else:
            lines += ['model_provider = "sluice"', "[model_providers.sluice]", 'name = "sluice"',
                      f'base_url = "{base}"', 'wire_api = "responses"',
                      "supports_websockets = true", *provider_lines]
        with open(os.path.join(codex_home, "config.toml"), "w") as f:
            f.write("\n".join(lines) + "\n")
        if auth_json:
            shutil.copy(auth_json, os.path.join(codex_home, "auth.json"))
        proxy = f"http://127.0.0.1:{self.proxy_port}"
        env = {"PATH": os.environ["PATH"], "HOME": home, "CODEX_HOME": codex_home,
               "CODEX_REFRESH_TOKEN_URL_OVERRIDE": f"http://127.0.0.1:{chatgpt_port}/oauth/token",
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


def entries(log, **match):
    out = []
    if not os.path.exists(log):
        return out
    for line in open(log):
        entry = json.loads(line)
        if all(entry.get(k) == v for k, v in match.items()):
            out.append(entry)
    return out


def stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as answer:
        return json.load(answer)


def stats_after(port, n, seconds=10):
    deadline = time.time() + seconds
    while True:
        body = stats(port)
        if body["totals"]["requests"] >= n or time.time() > deadline:
            return body
        time.sleep(0.1)


def sha(text):
    import hashlib
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def inference(log, listener):
    """The inference traffic a listener saw: socket upgrades, frames and POSTs of /responses."""
    return [e for e in entries(log, listener=listener)
            if e["kind"] in ("ws_open", "ws_frame") or e.get("path", "").endswith("/responses")]


def scenarios(run):
    token = subprocess.run([run.args.python, os.path.join(HERE, "make_auth.py"),
                            os.path.join(run.work, "auth.json")],
                           capture_output=True, text=True, check=True).stdout.strip()
    auth_json = os.path.join(run.work, "auth.json")

    # What Codex sends with nothing in between.
    api, chatgpt, direct_log = run.mock("direct", token)
    done, _ = run.codex("direct", f"http://127.0.0.1:{api}/openai/v1", "api", chatgpt)
    check("direct: codex exec answers from the mock", done.returncode == 0
          and "pong from the mock" in done.stdout, done.stderr[-400:])
    direct = inference(direct_log, "api")

    # API key through sluice.
    api, chatgpt, log = run.mock("api", token)
    port = run.sluice("api", f"http://127.0.0.1:{api}/openai/v1")
    done, secs = run.codex("api", f"http://127.0.0.1:{port}/openai/v1", "api", chatgpt)
    check("api: codex exec through sluice answers", done.returncode == 0
          and "pong from the mock" in done.stdout, done.stderr[-400:])
    seen = inference(log, "api")
    opens = [e for e in seen if e["kind"] == "ws_open"]
    check("api: one WebSocket, no fallback to HTTPS", len(opens) == 1
          and opens[0]["status"] == 101 and not any(e["kind"] == "http" for e in seen)
          and "Falling back" not in done.stderr, f"{[e['kind'] for e in seen]}")
    direct_open = next(e for e in direct if e["kind"] == "ws_open")

    def stable(headers, drop=()):
        return sorted((n, v) for n, v in headers if n not in PER_RUN and n not in drop)
    # sluice makes the handshake anew: its key, version and extension offer are its own; and
    # its HTTP/1.1 client (awc) writes a `date` on every request it sends upstream.
    handshake = {"sec-websocket-version", "sec-websocket-extensions", "connection", "upgrade",
                 "date"}
    check("api: the upgrade's headers are Codex's own (but host and the handshake's)",
          stable(opens[0]["headers"], handshake) == stable(direct_open["headers"], handshake),
          f"{stable(opens[0]['headers'], handshake)} vs "
          f"{stable(direct_open['headers'], handshake)}")
    frames = [e for e in seen if e["kind"] == "ws_frame"]
    direct_frames = [e for e in direct if e["kind"] == "ws_frame"]
    check("api: the same frames reached the upstream (prewarm, then the turn)",
          [(f["body"]["type"], f["body"]["generate"], f["body"]["keys"]) for f in frames]
          == [(f["body"]["type"], f["body"]["generate"], f["body"]["keys"])
              for f in direct_frames], f"{frames} vs {direct_frames}")
    check("api: the key reached the API mock as sent",
          ("authorization", sha(f"Bearer {API_KEY}")) in [tuple(h) for h in opens[0]["headers"]])
    body = stats_after(port, 1)
    check("api: /stats counted one response (the prewarm is none)",
          body["totals"]["requests"] == 1, json.dumps(body["totals"]))
    session = next(v for n, v in opens[0]["headers"] if n == "session-id")
    check("api: by_session has Codex's session-id",
          body["by_session"].get(session, {}).get("requests") == 1, json.dumps(body["by_session"]))
    check("api: by_model has the model Codex asked for",
          body["by_model"].get(frames[-1]["body"]["model"], {}).get("requests") == 1,
          json.dumps(body["by_model"]))
    print(f"     (codex exec took {secs:.1f} s through sluice)")

    # ChatGPT login through sluice (its upstream the ChatGPT-backend mock).
    api, chatgpt, log = run.mock("chatgpt", token)
    port = run.sluice("chatgpt", f"http://127.0.0.1:{chatgpt}/backend-api/codex")
    done, _ = run.codex("chatgpt", f"http://127.0.0.1:{port}/openai/v1", "chatgpt", chatgpt,
                        auth_json=auth_json)
    check("chatgpt: codex exec through sluice answers", done.returncode == 0
          and "pong from the mock" in done.stdout, done.stderr[-400:])
    opens = entries(log, listener="chatgpt", kind="ws_open")
    check("chatgpt: the token and account id reached the ChatGPT mock untouched",
          len(opens) == 1 and opens[0]["status"] == 101
          and ["authorization", sha(f"Bearer {token}")] in opens[0]["headers"]
          and ["chatgpt-account-id", "acct-test-0001"] in opens[0]["headers"],
          json.dumps(opens)[:600])
    leaked = [e for e in entries(log, listener="api")
              if ["authorization", sha(f"Bearer {token}")] in e.get("headers", [])]
    check("chatgpt: the token never reached the API mock", not leaked, json.dumps(leaked)[:300])
    body = stats_after(port, 1)
    windows = {}
    for state in body.get("rate_limits", {}).values():
        windows.update(state.get("windows", {}))
    check("chatgpt: /stats has the plan windows the mock sent (5h 42 %, 7d 7.5 %)",
          windows.get("5h", {}).get("utilization") == 0.42
          and windows.get("7d", {}).get("utilization") == 0.075, json.dumps(body["rate_limits"]))
    check("chatgpt: counted under the login's credential",
          any(k.startswith("client_") for k in body["by_credential"]),
          json.dumps(body["by_credential"]))

    # A team sluice: the access key in a provider's env_http_headers, never forwarded.
    api, chatgpt, log = run.mock("team", token)
    port = run.sluice("team", f"http://127.0.0.1:{api}/openai/v1",
                      '[access]\nheader = "x-sluice-key"\n[[access.keys]]\nname = "alice"\n'
                      'key_env = "E2E_ACCESS_ALICE"\n')
    done, _ = run.codex("team", f"http://127.0.0.1:{port}/openai/v1", "api", chatgpt,
                        provider_lines=['env_key = "CODEX_API_KEY"',
                                        'env_http_headers = { "x-sluice-key" = "SLUICE_KEY" }'],
                        extra_env={"SLUICE_KEY": ACCESS_KEY})
    check("team: codex exec with the access key in env_http_headers answers",
          done.returncode == 0 and "pong from the mock" in done.stdout, done.stderr[-400:])
    everything = json.dumps(entries(log))
    check("team: the access key never reached the upstream",
          "x-sluice-key" not in everything and ACCESS_KEY not in everything
          and sha(ACCESS_KEY) not in everything)
    body = stats_after(port, 1)
    check("team: counted for alice", body["by_caller"].get("alice", {}).get("requests") == 1,
          json.dumps(body["by_caller"]))

    # A quota of one response a day: the second run stops with sluice's message.
    api, chatgpt, log = run.mock("quota", token)
    port = run.sluice("quota", f"http://127.0.0.1:{api}/openai/v1",
                      '[[quotas]]\nname = "one-a-day"\nroute = "/openai/v1"\nwindow = "day"\n'
                      "max_requests = 1\n")
    first, _ = run.codex("quota-1", f"http://127.0.0.1:{port}/openai/v1", "api", chatgpt)
    second, secs = run.codex("quota-2", f"http://127.0.0.1:{port}/openai/v1", "api", chatgpt)
    check("quota: the first run answers", first.returncode == 0, first.stderr[-300:])
    check("quota: the second run shows sluice's message and stops",
          second.returncode != 0 and "sluice: quota one-a-day reached" in second.stderr
          and secs < 60, f"rc={second.returncode} {secs:.0f}s {second.stderr[-400:]}")
    turns = [e for e in entries(log, listener="api", kind="ws_frame")
             if e["body"].get("generate") is not False]
    check("quota: the refused response never went upstream", len(turns) == 1, f"{len(turns)}")


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
