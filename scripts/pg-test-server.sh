#!/usr/bin/env bash
# A throwaway PostgreSQL for the store's tests: its own data directory and unix socket in a temp
# directory, trust authentication, nothing system-wide touched. It also listens on 127.0.0.1 (same
# port) with TLS on, its certificate (for DNS name `localhost` only) issued by a test CA made
# here: `$dir/tls/ca.crt`, where `$dir` is the URL's `host=`.
#
#   scripts/pg-test-server.sh start          # prints the URL, e.g. for
#   export SLUICE_TEST_PG_URL="$(scripts/pg-test-server.sh start)"
#   cargo test --test store -- --ignored
#   scripts/pg-test-server.sh stop "$SLUICE_TEST_PG_URL"
#
# `restart URL` restarts the server behind URL (the tests use it to cut connections mid-run).
# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user.
set -euo pipefail

bin_dir() {
    if command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"
    else
        ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
    fi
}

BIN="$(bin_dir)"
[ -x "$BIN/pg_ctl" ] || { echo "pg-test-server: no pg_ctl found (install postgresql)" >&2; exit 1; }

as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# The temp directory holding data/ and the socket, from a URL made by `start`.
dir_of() {
    local url="$1"
    local host="${url#*host=}"
    host="${host%%&*}"
    [ -d "$host/data" ] || { echo "pg-test-server: $host/data not found" >&2; exit 1; }
    echo "$host"
}

# A test CA and a server certificate it signed, for `localhost` only (a test checks that
# verify-full refuses 127.0.0.1); the key readable by the server only.
make_certs() {
    local tls="$1"
    "$(dirname "$0")/test-ca.sh" "$tls" DNS:localhost
    chmod 755 "$tls"
    if [ "$(id -u)" = 0 ]; then chown -R postgres "$tls"; fi
}

case "${1:-start}" in
start)
    dir="$(mktemp -d /tmp/sluice-pg-XXXXXX)"
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    port=$(( 20000 + RANDOM % 20000 ))
    as_owner "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    make_certs "$dir/tls" >"$dir/openssl.log" 2>&1 || { cat "$dir/openssl.log" >&2; exit 1; }
    cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
ssl = on
ssl_cert_file = '$dir/tls/server.crt'
ssl_key_file = '$dir/tls/server.key'
unix_socket_directories = '$dir'
port = $port
fsync = off
synchronous_commit = on
full_page_writes = off
max_connections = 50
EOF
    as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgresql://postgres@/postgres?host=$dir&port=$port"
    ;;
restart)
    dir="$(dir_of "${2:?usage: $0 restart URL}")"
    as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 -m fast restart >/dev/null
    ;;
stop)
    dir="$(dir_of "${2:?usage: $0 stop URL}")"
    as_owner "$BIN/pg_ctl" -D "$dir/data" -w -t 30 -m fast stop >/dev/null || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start | restart URL | stop URL" >&2
    exit 2
    ;;
esac
