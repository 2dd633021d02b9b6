#!/usr/bin/env bash
# End-to-end: real clients through sluice. Installs the official Python SDKs (anthropic,
# openai), the TypeScript SDKs (@anthropic-ai/sdk, openai) and Claude Code (into
# scripts/e2e/.deps and scripts/e2e/node_modules, both git-ignored), starts a mock Anthropic
# upstream (scripts/e2e/mock_anthropic.py) and three sluice instances in front of
# it — "open" (a server key, no access keys), "team" (the same server key plus access key
# "alice") and "tls" (like "open", serving HTTPS with a certificate from a CA made for the run),
# then runs scripts/e2e/checks.py, which prints PASS/FAIL per check and ends with
# "N passed, M failed". Then scripts/e2e/costs_sdk.py (the Python SDK's own usage of every
# streamed Anthropic fixture against /stats) and scripts/e2e/openai_sdk.py (the OpenAI SDKs
# through the openai route: usage, sluice's refusals as the SDKs' own errors, one quota across
# OpenAI and Anthropic spend), each with its own mock and sluice.
# Everything listens on 127.0.0.1 only; no request leaves the machine.
#
# Idempotent: re-running reuses the installed clients and starts from a clean scratch folder.
# Env: SLUICE_BIN=path to use a built binary as is; E2E_LATEST=1 to install the newest client
# releases instead of the pinned ones (scripts/e2e/package.json, requirements.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
e2e=$root/scripts/e2e
deps=$e2e/.deps
work=$deps/run          # scratch: settings, logs, client HOMEs; kept after the run for a look
export DEBIAN_FRONTEND=noninteractive

log() { printf '\n==> %s\n' "$*"; }
die() { echo "e2e: $*" >&2; exit 1; }

apt_install() {
  if [ -z "${apt_updated:-}" ]; then apt-get update -qq; apt_updated=1; fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

log "client runtimes"
command -v python3 >/dev/null || apt_install python3
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 18 ] || die "Node >= 18 needed for the SDK and Claude Code, found $(node --version)"
echo "python $(python3 --version | cut -d' ' -f2), node $(node --version), npm $(npm --version)"

log "Python SDK (venv in scripts/e2e/.deps/venv)"
mkdir -p "$deps"
[ -x "$deps/venv/bin/python" ] || python3 -m venv "$deps/venv"
if [ "${E2E_LATEST:-}" = 1 ]; then
  "$deps/venv/bin/pip" install -q --disable-pip-version-check --upgrade anthropic openai
else
  "$deps/venv/bin/pip" install -q --disable-pip-version-check -r "$e2e/requirements.txt"
fi
"$deps/venv/bin/python" -c 'import anthropic, openai; print("anthropic", anthropic.__version__, "openai", openai.__version__)'

log "TypeScript SDK and Claude Code (npm, scripts/e2e/node_modules)"
if [ "${E2E_LATEST:-}" = 1 ]; then
  (cd "$e2e" && npm install --no-audit --no-fund --no-package-lock --loglevel=error \
    @anthropic-ai/sdk@latest @anthropic-ai/claude-code@latest openai@latest --no-save)
else
  (cd "$e2e" && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
fi
claude_bin=$e2e/node_modules/.bin/claude
# The claude package puts its native binary in place from a postinstall script; npm setups that
# skip install scripts leave a placeholder, so run that step ourselves when needed.
if ! HOME=$deps timeout 60 "$claude_bin" --version >/dev/null 2>&1; then
  (cd "$e2e/node_modules/@anthropic-ai/claude-code" && node install.cjs)
fi
HOME=$deps timeout 60 "$claude_bin" --version
node -p '"@anthropic-ai/sdk " + require(process.argv[1] + "/package.json").version' \
  "$e2e/node_modules/@anthropic-ai/sdk"

log "sluice binary"
if [ -n "${SLUICE_BIN:-}" ]; then
  bin=$SLUICE_BIN
else
  cargo build --quiet
  bin=$root/target/debug/sluice
fi
[ -x "$bin" ] || die "no sluice binary at $bin"

log "mock upstream and sluice"
rm -rf "$work"
mkdir -p "$work"
pids=()
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
  local pid deadline=$((SECONDS + 10))
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # sluice drains in-flight requests on SIGTERM; give everything 10 s, then stop it hard.
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for FILE PATTERN SECONDS: until the file contains the pattern, or give up.
wait_for() {
  local deadline=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

python3 "$e2e/mock_anthropic.py" --log "$work/mock-requests.jsonl" >"$work/mock.port" 2>"$work/mock.log" &
pids+=($!)
wait_for "$work/mock.port" '^[0-9]' 10 || { cat "$work/mock.log" >&2; die "mock did not start"; }
mock=http://127.0.0.1:$(head -1 "$work/mock.port")
echo "mock upstream: $mock"

# Fake secrets, fresh each run, shaped like real ones.
server_key=sk-ant-api03-test-e2e-server-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
alice_key=sluice-e2e-alice-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')

start_sluice() { # NAME EXTRA_TOML [https]: starts sluice, sets $addr
  local name=$1 extra=$2 scheme=${3:-http}
  cat >"$work/$name.toml" <<TOML
listen = "127.0.0.1:0"
shutdown_grace_s = 5
[[routes]]
prefix = "/anthropic"
upstream = "$mock"
server_key_env = "E2E_SERVER_KEY"
[stats]
state_file = ""
[store]
path = "$work/$name.db"   # each instance its own store, fresh every run
$extra
TOML
  # A clean environment: no SLUICE__* overrides or admin token from this shell.
  env -i PATH="$PATH" RUST_LOG=info E2E_SERVER_KEY="$server_key" E2E_ACCESS_ALICE="$alice_key" \
    "$bin" --settings "$work/$name.toml" 2>"$work/sluice-$name.log" &
  pids+=($!)
  if ! wait_for "$work/sluice-$name.log" 'listening addr=' 30; then
    cat "$work/sluice-$name.log" >&2
    die "sluice ($name) did not start"
  fi
  addr=$scheme://$(grep -o 'listening addr=127.0.0.1:[0-9]*' "$work/sluice-$name.log" | head -1 | cut -d= -f2)
  [ "$(python3 -c 'import ssl,sys,urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2]) if sys.argv[2] else None
print(urllib.request.urlopen(sys.argv[1], timeout=5, context=ctx).read().decode())' "$addr/healthz" "${tls_ca:-}")" = ok ] \
    || die "sluice ($name) /healthz did not answer ok"
  echo "sluice ($name): $addr"
}
start_sluice open ""
open=$addr
start_sluice team '[access]
header = "x-sluice-key"
[[access.keys]]
name = "alice"
key_env = "E2E_ACCESS_ALICE"'
team=$addr

# "tls": the open sluice again, serving HTTPS with a certificate from a CA made for this run.
scripts/test-ca.sh "$work/tls" DNS:localhost,IP:127.0.0.1
tls_ca=$work/tls/ca.crt
start_sluice tls "[tls]
cert_file = \"$work/tls/server.crt\"
key_file = \"$work/tls/server.key\"" https
tls=$addr

log "checks"
status=0
E2E_MOCK=$mock E2E_SLUICE_OPEN=$open E2E_SLUICE_TEAM=$team E2E_SLUICE_TLS=$tls E2E_TLS_CA=$tls_ca \
  E2E_SERVER_KEY=$server_key E2E_ACCESS_ALICE=$alice_key \
  E2E_PYTHON=$deps/venv/bin/python E2E_NODE=$(command -v node) E2E_CLAUDE=$claude_bin \
  E2E_DIR=$e2e E2E_WORK=$work E2E_LOGS=$work/sluice-open.log:$work/sluice-team.log:$work/sluice-tls.log \
  timeout 600 python3 "$e2e/checks.py" || status=$?
if [ "$status" -ne 0 ]; then
  echo "logs: $work (mock-requests.jsonl, sluice-open.log, sluice-team.log)" >&2
fi

log "costs: the Python SDK's own usage of every streamed fixture equals what /stats counted"
SLUICE_BIN=$bin timeout 300 "$deps/venv/bin/python" "$e2e/costs_sdk.py" || status=$?

log "OpenAI SDKs (Python and Node) through the openai route: usage, refusals, a quota across providers"
SLUICE_BIN=$bin E2E_NODE=$(command -v node) E2E_DIR=$e2e \
  timeout 600 "$deps/venv/bin/python" "$e2e/openai_sdk.py" || status=$?
exit "$status"
