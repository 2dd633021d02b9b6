#!/usr/bin/env bash
# A test CA of its own and a server certificate it signed, for tests and benches only.
#   scripts/test-ca.sh DIR SUBJECT_ALT_NAMES     e.g. scripts/test-ca.sh /tmp/x DNS:localhost,IP:127.0.0.1
# Writes DIR/ca.crt, DIR/ca.key, DIR/server.crt and DIR/server.key (mode 600); openssl's chatter
# goes to DIR/openssl.log, shown when it fails.
set -euo pipefail
dir=${1:?usage: $0 DIR SUBJECT_ALT_NAMES}
names=${2:?usage: $0 DIR SUBJECT_ALT_NAMES}
mkdir -p "$dir"
{
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
    -subj "/CN=sluice test CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=localhost" -keyout "$dir/server.key" -out "$dir/server.csr"
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
    "$names" >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 7 -extfile "$dir/server.ext" -out "$dir/server.crt"
} >"$dir/openssl.log" 2>&1 || { cat "$dir/openssl.log" >&2; echo "test-ca: openssl failed" >&2; exit 1; }
chmod 600 "$dir/server.key"
