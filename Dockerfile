# sluice in a container: built in one stage, run in a slim one as a non-root user with its state
# in a volume.
#   docker build -t sluice .          (or podman build)
#   docker run -d -p 4080:4080 -v sluice-state:/var/lib/sluice \
#     -v ./keys:/etc/sluice/keys:ro sluice
# Mount your own settings over /etc/sluice/sluice.toml, and secrets as files (server_key_file,
# [access] keys_dir, [admin] token_file) rather than environment variables where you can.
# The base images can be swapped for local copies (scripts/container-smoke.sh does, on a machine
# without registry access): --build-arg BUILD_IMAGE=… --build-arg RUNTIME_IMAGE=…
ARG BUILD_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim
FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin sluice

FROM ${RUNTIME_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/sluice --no-create-home sluice \
    && mkdir -p /var/lib/sluice /etc/sluice/keys \
    && chown sluice:sluice /var/lib/sluice && chmod 0700 /var/lib/sluice
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
# The container's own network namespace is the boundary: listen on every interface in it. A
# server key without access keys is still refused beyond loopback.
COPY packaging/container.toml /etc/sluice/sluice.toml
ENV STATE_DIRECTORY=/var/lib/sluice
VOLUME /var/lib/sluice
USER sluice
WORKDIR /var/lib/sluice
EXPOSE 4080
ENTRYPOINT ["/usr/local/bin/sluice", "--settings", "/etc/sluice/sluice.toml"]
