# presence-node container image: the server (`presence-node`, the entrypoint) and the CLI
# (`presence`). Build: docker build -t presence-node .
#
# No HEALTHCHECK: the image has no shell and no gRPC health client. Kubernetes uses its native
# gRPC probes (see helm/presence-node; TCP checks with TLS); for plain Docker, probe from
# outside, e.g. liveness (the process, never Redis) and readiness:
#   grpcurl -plaintext -d '{"service":""}' localhost:50051 grpc.health.v1.Health/Check
#   grpcurl -plaintext -d '{"service":"presence.v1.PresenceService"}' localhost:50051 grpc.health.v1.Health/Check
# (The `presence` CLI has no health command.)

ARG RUST_VERSION=1

# ---- build -----------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src

# Dependencies first, against stub sources: this layer is rebuilt only when Cargo.toml,
# Cargo.lock, build.rs or the proto change, not on every source edit. build.rs compiles the proto
# with protox (pure Rust), so no protoc is needed.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir -p src/bin/presence-bench \
    && echo 'fn main() {}' > src/bin/presence-node.rs \
    && echo 'fn main() {}' > src/bin/presence.rs \
    && echo 'fn main() {}' > src/bin/presence-bench/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin presence-node --bin presence \
    && rm -rf src

COPY src ./src
# COPY keeps the files' own mtimes, which can be older than the stub build: touch them so cargo
# rebuilds the crate instead of shipping the stubs.
RUN find src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --bin presence-node --bin presence \
    && install -D -m 0755 target/release/presence-node /out/presence-node \
    && install -D -m 0755 target/release/presence /out/presence

# ---- runtime ---------------------------------------------------------------------------------
# distroless/cc: glibc and libgcc_s (what the binaries link), CA certificates, no shell.
FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="presence-node" \
      org.opencontainers.image.description="Real-time user presence over gRPC" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/presence-node /out/presence /usr/local/bin/

# The uid/gid the Helm chart runs as (runAsUser 10001); it needs no passwd entry.
USER 10001:10001

# In a container the node must listen on every interface (its own default is 127.0.0.1), and
# there the node's own default identity, `insecure` (callers name themselves with x-user-id),
# is refused (exit 64) unless PRESENCE_ALLOW_INSECURE=true. So the image sets PRESENCE_AUTH=jwt
# explicitly: it starts only once it has a key to verify tokens with, and otherwise exits 64
# naming PRESENCE_JWT_SECRET. Run it with one of:
#   docker run -e PRESENCE_JWT_SECRET=... presence-node                      (HS256 JWTs)
#   docker run -e PRESENCE_JWT_ALGORITHM=RS256 -e PRESENCE_JWT_PUBLIC_KEY_FILE=/keys/pub.pem \
#              -v "$PWD/keys:/keys:ro" presence-node                          (RS256/ES256 JWTs)
#   docker run -e PRESENCE_AUTH=insecure -e PRESENCE_ALLOW_INSECURE=true presence-node
#                                                  (development only: anyone can be anyone)
# TLS: mount a directory with the PEM files (not single files: rotations replace them) and set
# PRESENCE_TLS_CERT_FILE / PRESENCE_TLS_KEY_FILE; without them every listener is plaintext.
# An admin listener (PRESENCE_ADMIN_ADDR=0.0.0.0:50052) needs PRESENCE_ADMIN_TOKEN (not empty)
# or PRESENCE_ADMIN_CLIENT_CA_FILE.
ENV PRESENCE_LISTEN_ADDR=0.0.0.0:50051 \
    PRESENCE_AUTH=jwt \
    PRESENCE_LOG_FORMAT=json

# 50051 gRPC, 9090 Prometheus metrics (PRESENCE_METRICS_ADDR), 50052 admin API (PRESENCE_ADMIN_ADDR).
EXPOSE 50051 9090 50052

ENTRYPOINT ["/usr/local/bin/presence-node"]
