#!/usr/bin/env bash
# Builds the container image and checks that it runs as documented: not as root, callers from
# /etc/sluice/keys, /healthz answering, the store in the volume surviving a new container.
#
#   scripts/container-smoke.sh                 the Dockerfile as is (the engine pulls its bases)
#   BASES=local scripts/container-smoke.sh     the Dockerfile as is, both stages, on bases made
#                                              here: Debian bookworm by debootstrap, and that
#                                              plus gcc and Rust by rustup for the build stage
#   RUNTIME_BASE=IMAGE scripts/container-smoke.sh
#                                              the runtime stage only, on IMAGE (a Debian bookworm
#                                              image, or "debootstrap" to make one), with this
#                                              checkout's `cargo build --release` as the binary
# BUILD_ISOLATION=chroot builds without an OCI runtime. ENGINE_FLAGS go before every engine
# command (e.g. `--runtime /usr/sbin/runc`), RUN_FLAGS after every `run` (e.g. ulimits the
# sandbox allows); .ci/run sets these for its machine.
set -euo pipefail
cd "$(dirname "$0")/.."
engine_bin=$(command -v podman || command -v docker || true)
[ -n "$engine_bin" ] || { echo "no container engine (podman or docker)" >&2; exit 1; }
# The flags are words on purpose: unquoted.
# shellcheck disable=SC2086
engine() { "$engine_bin" ${ENGINE_FLAGS:-} "$@"; }
# shellcheck disable=SC2086
engine_run() { engine run ${RUN_FLAGS:-} "$@"; }
engine_build() { engine build -q ${BUILD_ISOLATION:+--isolation "$BUILD_ISOLATION"} "$@" >/dev/null; }
tag=localhost/sluice-smoke:latest
name=sluice-smoke-$$
tmp=$(mktemp -d)
cleanup() { engine rm -f "$name" >/dev/null 2>&1 || true; engine volume rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$tmp"; }
trap cleanup EXIT

debian=localhost/sluice-debian:bookworm
rust=localhost/sluice-rust:bookworm
# A minimal Debian bookworm image from Debian's own packages, made once.
debian_base() {
  engine image exists "$debian" 2>/dev/null && return 0
  debootstrap --variant=minbase bookworm "$tmp/rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
  tar -C "$tmp/rootfs" -c . | engine import - "$debian" >/dev/null
  rm -rf "$tmp/rootfs"
}
# That image plus a C toolchain and stable Rust from rustup: what the official rust image holds.
# It trusts what this machine trusts (its CA bundle), so the build stage reaches crates.io
# through a TLS-inspecting proxy the machine is set up for.
rust_base() {
  engine image exists "$rust" 2>/dev/null && return 0
  mkdir -p "$tmp/rust"
  cp /etc/ssl/certs/ca-certificates.crt "$tmp/rust/"
  cat > "$tmp/rust/Containerfile" <<CONTAINERFILE
FROM $debian
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends ca-certificates curl gcc libc6-dev >/dev/null \\
    && rm -rf /var/lib/apt/lists/*
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN curl -sSf -o /tmp/rustup-init https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init \\
    && chmod +x /tmp/rustup-init && /tmp/rustup-init -y -q --profile minimal --default-toolchain stable \\
    && rm /tmp/rustup-init
CONTAINERFILE
  engine_build -t "$rust" "$tmp/rust"
}

if [ "${BASES:-}" = local ]; then
  debian_base
  rust_base
  engine_build --build-arg BUILD_IMAGE="$rust" --build-arg RUNTIME_IMAGE="$debian" -t "$tag" .
elif [ -n "${RUNTIME_BASE:-}" ]; then
  if [ "$RUNTIME_BASE" = debootstrap ]; then debian_base; RUNTIME_BASE=$debian; fi
  [ -x target/release/sluice ] || cargo build --release --bin sluice
  # The runtime stage: from its FROM to the end, the binary's source swapped.
  { echo "ARG RUNTIME_IMAGE"; awk 'f||/^FROM \$\{RUNTIME_IMAGE\}/{f=1; print}' Dockerfile; } \
    | sed "s|^COPY --from=build /src/target/release/sluice|COPY target/release/sluice|" \
    > "$tmp/Containerfile.runtime"
  grep -q "^COPY target/release/sluice" "$tmp/Containerfile.runtime"
  # A context of its own: the real one leaves target/ out (.dockerignore).
  mkdir -p "$tmp/context/target/release" "$tmp/context/packaging"
  cp target/release/sluice "$tmp/context/target/release/"
  cp packaging/container.toml "$tmp/context/packaging/"
  engine_build --build-arg RUNTIME_IMAGE="$RUNTIME_BASE" -t "$tag" -f "$tmp/Containerfile.runtime" "$tmp/context"
else
  engine_build -t "$tag" .
fi
echo "container: image built"

mkdir -p "$tmp/keys" && (umask 077; echo "smoke-key-alice" > "$tmp/keys/alice") && chmod 755 "$tmp/keys" && chmod 644 "$tmp/keys/alice"
# start: runs the image with the state volume and the keys, sets $port once /healthz answers.
start() {
  engine_run -d --name "$name" -p 127.0.0.1::4080 -v "$name:/var/lib/sluice" \
    -v "$tmp/keys:/etc/sluice/keys:ro" "$tag" >/dev/null
  port=$(engine port "$name" 4080/tcp | head -1 | sed 's/.*://')
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  engine logs "$name" >&2
  echo "no /healthz answer from the container" >&2
  exit 1
}
start
user=$(engine exec "$name" id -u)
[ "$user" != 0 ] || { echo "runs as root" >&2; exit 1; }
status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/anthropic/v1/messages" -d '{}')
[ "$status" = 401 ] || { echo "a request without an access key got $status, not 401" >&2; exit 1; }
engine logs "$name" 2>&1 | grep "access keys: alice" >/dev/null || { engine logs "$name"; exit 1; }
engine stop -t 10 "$name" >/dev/null
engine rm "$name" >/dev/null
engine_run --rm -v "$name:/var/lib/sluice" --entrypoint /bin/ls "$tag" /var/lib/sluice/state \
  | grep -x sluice.db >/dev/null || { echo "no store (state/sluice.db) in the volume after a stop" >&2; exit 1; }
# A new container on the same volume: the refused request is still counted, from the store.
start
requests=$(curl -sf "http://127.0.0.1:$port/stats" | python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["requests"])')
[ "$requests" = 1 ] || { echo "after a restart /stats counts $requests requests, not 1" >&2; exit 1; }
echo "container: built, runs as uid $user, /healthz ok, callers from /etc/sluice/keys, the store in the volume survives a new container"
