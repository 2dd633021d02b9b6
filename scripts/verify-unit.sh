#!/usr/bin/env bash
# Checks packaging/sluice.service with `systemd-analyze verify` (syntax, directives, sandboxing
# options), pointing ExecStart at the binary built here since /usr/local/bin/sluice may not be
# installed on the machine that runs CI.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-$PWD/target/debug/sluice}"
[ -x "$bin" ] || cargo build --bin sluice
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/local/bin/sluice|$bin|" packaging/sluice.service > "$tmp/sluice.service"
out=$(systemd-analyze verify "$tmp/sluice.service" 2>&1) || { echo "$out"; exit 1; }
# verify exits 0 on some problems it only prints; any line about our unit is a failure.
if echo "$out" | grep -F "sluice.service" >/dev/null; then
  echo "$out"
  exit 1
fi
echo "packaging/sluice.service: systemd-analyze verify found nothing"
