#!/usr/bin/env bash
# Codex CLI end to end through sluice: installs the pinned Codex CLI (npm, scripts/e2e/codex/
# package.json, into scripts/e2e/codex/node_modules) and the mock's Python packages (a venv in
# scripts/e2e/.deps/codex-venv), then runs checks.py: `codex exec` in API-key and ChatGPT-login
# mode through sluice's `/openai/v1` route (protocol openai, upstream and subscription_upstream
# both mocks) over the WebSocket and over HTTPS, byte for byte and metered exactly; access keys
# in a provider's env_http_headers and as the bearer for the server key; a quota that stops
# Codex with sluice's message on either transport. Prints PASS/FAIL per check and
# "N passed, M failed".
#
# The run happens in a network namespace of its own with only a loopback interface (unshare),
# so neither Codex nor anything else can reach beyond the machine; where unshare is not
# available it runs as is (everything listens on 127.0.0.1, and Codex's other destinations go
# to a proxy that refuses them).
# Env: SLUICE_BIN=path to use a built binary as is.
set -euo pipefail
cd "$(dirname "$0")/../../.."
root=$PWD
here=$root/scripts/e2e/codex
deps=$root/scripts/e2e/.deps
work=$deps/codex-run

if [ "${1:-}" != --inside ]; then
  command -v node >/dev/null && command -v npm >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  }
  (cd "$here" && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
  mkdir -p "$deps"
  [ -x "$deps/codex-venv/bin/python" ] || python3 -m venv "$deps/codex-venv"
  "$deps/codex-venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
  "$here/node_modules/.bin/codex" --version
  if [ -z "${SLUICE_BIN:-}" ]; then
    cargo build --quiet
    export SLUICE_BIN=$root/target/debug/sluice
  fi
  if unshare -rn true 2>/dev/null && command -v ip >/dev/null; then
    exec unshare -rn "$0" --inside
  fi
  echo "codex e2e: no network namespace here; running on the host's loopback" >&2
fi
if [ "${1:-}" = --inside ]; then ip link set lo up; fi
rm -rf "$work"
mkdir -p "$work"
exec "$deps/codex-venv/bin/python" "$here/checks.py" --codex "$here/node_modules/.bin/codex" \
  --sluice "$SLUICE_BIN" --python "$deps/codex-venv/bin/python" --work "$work"
