# syntax=docker/dockerfile:1
# outbox-worker container image. Configured by environment variables only (OUTBOX_*; see
# `outbox-worker config`). Build from the repository root:
#   docker build -t outbox-worker:local .
# Used by deploy/compose.yaml; see deploy/README.md.

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and incremental artifacts between builds (BuildKit).
# The release profile keeps line tables (debug = 1) for backtraces; compressing them shrinks
# the binary from ~80 MB to ~30 MB and backtraces still show file:line.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p outbox-worker --bin outbox-worker \
 && mkdir -p /out \
 && objcopy --compress-debug-sections=zlib target/release/outbox-worker /out/outbox-worker \
 && /out/outbox-worker --version

FROM debian:bookworm-slim
# ca-certificates: the engine client (rustls with native roots) trusts the system CAs;
# add a private CA with OUTBOX_ELASTICSEARCH_CA_FILE and a mounted file.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 outbox \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin outbox
COPY --from=builder /out/outbox-worker /usr/local/bin/outbox-worker

# Defaults for a container: metrics reachable from outside, logs as JSON lines.
ENV OUTBOX_METRICS_ADDR=0.0.0.0:9464 \
    OUTBOX_LOG_FORMAT=json

USER 10001:10001
EXPOSE 9464
# SIGTERM: stop claiming, finish in-flight bulks within OUTBOX_SHUTDOWN_GRACE_SECONDS, release
# the rest, exit 0. Give the container a stop timeout longer than that grace period.
STOPSIGNAL SIGTERM
# /healthz (process alive) over bash's /dev/tcp: no curl in the image. The port follows
# OUTBOX_METRICS_ADDR. Readiness (database, engine, LISTEN) is /readyz, for orchestrators.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "port=\"${OUTBOX_METRICS_ADDR##*:}\"; exec 3<>\"/dev/tcp/127.0.0.1/${port:-9464}\" && printf 'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["outbox-worker"]
CMD ["run"]
