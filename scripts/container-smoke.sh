#!/usr/bin/env bash
# Builds the container image and checks that it runs as documented: not as root, state in the
# volume, callers from /etc/sluice/keys, /healthz answering.
#
# With a container engine that can pull the base images this builds the Dockerfile as is. On a
# machine that cannot (no registry access), RUNTIME_BASE=<local Debian bookworm image> builds
# only the Dockerfile's runtime stage, unchanged but for taking the sluice binary from this
# checkout's `cargo build --release` instead of the build stage (same Debian release, same libc);
# BUILD_ISOLATION=chroot builds without an OCI runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
engine=$(command -v podman || command -v docker || true)
[ -n "$engine" ] || { echo "no container engine (podman or docker): skipped"; exit 0; }
tag=localhost/sluice-smoke:latest
name=sluice-smoke-$$
tmp=$(mktemp -d)
cleanup() { "$engine" rm -f "$name" >/dev/null 2>&1 || true; "$engine" volume rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT

if [ -n "${RUNTIME_BASE:-}" ]; then
  [ -x target/release/sluice ] || cargo build --release --bin sluice
  # The runtime stage: from its FROM to the end, the base and the binary's source swapped.
  awk 'f||/^FROM docker.io\/library\/debian/{f=1; print}' Dockerfile \
    | sed "s|^FROM docker.io/library/debian:bookworm-slim|FROM $RUNTIME_BASE|" \
    | sed "s|^COPY --from=build /src/target/release/sluice|COPY target/release/sluice|" \
    > "$tmp/Containerfile.runtime"
  grep -q "^COPY target/release/sluice" "$tmp/Containerfile.runtime"
  # A context of its own: the real one leaves target/ out (.dockerignore).
  mkdir -p "$tmp/context/target/release" "$tmp/context/packaging"
  cp target/release/sluice "$tmp/context/target/release/"
  cp packaging/container.toml "$tmp/context/packaging/"
  "$engine" build -q ${BUILD_ISOLATION:+--isolation "$BUILD_ISOLATION"} -t "$tag" \
    -f "$tmp/Containerfile.runtime" "$tmp/context" >/dev/null
else
  "$engine" build -q -t "$tag" . >/dev/null
fi
echo "container: image built"

mkdir -p "$tmp/keys" && (umask 077; echo "smoke-key-alice" > "$tmp/keys/alice") && chmod 755 "$tmp/keys" && chmod 644 "$tmp/keys/alice"
"$engine" run -d --name "$name" -p 127.0.0.1::4080 -v "$name:/var/lib/sluice" \
  -v "$tmp/keys:/etc/sluice/keys:ro" "$tag" >/dev/null
port=$("$engine" port "$name" 4080/tcp | head -1 | sed 's/.*://')
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { "$engine" logs "$name"; exit 1; }
user=$("$engine" exec "$name" id -u)
[ "$user" != 0 ] || { echo "runs as root" >&2; exit 1; }
status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/anthropic/v1/messages" -d '{}')
[ "$status" = 401 ] || { echo "a request without an access key got $status, not 401" >&2; exit 1; }
"$engine" logs "$name" 2>&1 | grep -q "access keys: alice" || { "$engine" logs "$name"; exit 1; }
"$engine" stop -t 10 "$name" >/dev/null
"$engine" run --rm -v "$name:/var/lib/sluice" --entrypoint /bin/ls "$tag" /var/lib/sluice/state \
  | grep -q stats.json || { echo "no state file in the volume after a stop" >&2; exit 1; }
echo "container: built, runs as uid $user, /healthz ok, callers from /etc/sluice/keys, state in the volume"
