#!/usr/bin/env bash
# Gemini end to end through sluice: installs the pinned Gemini CLI (npm, scripts/e2e/gemini/
# package.json, into scripts/e2e/gemini/node_modules) and the pinned google-genai Python SDK (a
# venv in scripts/e2e/.deps/gemini-venv), then runs checks.py: the SDK streamed and not,
# countTokens, embedContent, a batch's results (`batches.get` with inlined responses and
# `files.download` of its responses file, at the batch rate), a `?key=` request, the server key
# as x-goog-api-key, a sluice error in Google's shape, `gemini -p` in API-key mode and in Google-login (Code Assist) mode, and no
# key in the log, /stats, /usage, /metrics or the store file. Prints PASS/FAIL per check and
# "N passed, M failed"; exits non-zero on any failure.
#
# The checks run in a network namespace of their own with only a loopback interface (unshare),
# so neither client can reach beyond the machine; where unshare is not available they run as
# is (the mock and sluice listen on 127.0.0.1 only).
# Env: SLUICE_BIN=path to use a built binary as is.
set -euo pipefail
cd "$(dirname "$0")/../../.."
root=$PWD
here=$root/scripts/e2e/gemini
deps=$root/scripts/e2e/.deps

if [ "${1:-}" != --inside ]; then
  command -v node >/dev/null && command -v npm >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  }
  node_major=$(node -p 'process.versions.node.split(".")[0]')
  [ "$node_major" -ge 20 ] || { echo "gemini e2e: Node >= 20 needed, found $(node --version)" >&2; exit 1; }
  (cd "$here" && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
  mkdir -p "$deps"
  python3 -c 'import venv, ensurepip' 2>/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  }
  [ -x "$deps/gemini-venv/bin/python" ] || python3 -m venv "$deps/gemini-venv"
  "$deps/gemini-venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
  echo "Gemini CLI $(HOME=$deps timeout 60 "$here/node_modules/.bin/gemini" --version)"
  "$deps/gemini-venv/bin/python" -c 'import google.genai as g; print("google-genai", g.__version__)'
  if [ -z "${SLUICE_BIN:-}" ]; then
    cargo build --quiet
    export SLUICE_BIN=$root/target/debug/sluice
  fi
  export GEMINI_CLI=$here/node_modules/.bin/gemini
  if unshare -rn true 2>/dev/null && command -v ip >/dev/null; then
    exec unshare -rn "$0" --inside
  fi
  echo "gemini e2e: no network namespace here; running on the host's loopback" >&2
fi
if [ "${1:-}" = --inside ]; then ip link set lo up; fi
exec timeout 900 "$deps/gemini-venv/bin/python" "$here/checks.py"
