# Keygate container image: a static-enough release binary on a slim Debian
# base, running as an unprivileged user; nothing is written to the root
# filesystem at run time, so it runs with readOnlyRootFilesystem.
#
#   docker build --build-arg VERSION="$(git describe --tags --always)" \
#     --build-arg SOURCE=https://<where this repository lives> -t keygate .

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src

# Dependencies first, in a layer that only Cargo.toml, Cargo.lock and .cargo/
# invalidate: cargo builds them against stand-ins for the library, the binary
# and the build script. Every test and bench the manifest declares gets an
# empty stand-in too, kept for the real build below: cargo refuses to load a
# manifest whose bench has no file where it looks for one.
COPY Cargo.toml Cargo.lock ./
COPY .cargo .cargo
RUN mkdir -p src benches/authorize tests/api tests/store \
    && echo 'fn main() {}' > build.rs \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && for target in benches/create_key.rs benches/hot_path.rs benches/propagation.rs benches/caller_checks.rs \
        benches/authorize/main.rs tests/api/main.rs tests/store/main.rs tests/metrics.rs; do \
        echo 'fn main() {}' > "${target}"; \
    done \
    && cargo build --release --locked --bin keygate \
    && rm -rf build.rs src

# Then Keygate itself. tests/ and benches/ stay out of the image's context
# (.dockerignore): their stand-ins above keep the manifest loadable.
COPY build.rs ./
COPY proto proto
COPY migrations migrations
COPY policies policies
COPY src src
# COPY keeps the files' own modification times, which may be older than the
# stand-ins' build: touch them so that cargo rebuilds Keygate.
RUN touch build.rs src/main.rs src/lib.rs \
    && cargo build --release --locked --bin keygate \
    && strip target/release/keygate

FROM debian:bookworm-slim
ARG VERSION=0.1.0
ARG SOURCE=""
LABEL org.opencontainers.image.title="keygate" \
      org.opencontainers.image.description="Keygate: a gRPC authorization service for scoped API keys" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}"
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin keygate
COPY --from=build /src/target/release/keygate /usr/local/bin/keygate
USER 10001:10001
# gRPC (KEYGATE_LISTEN) and Prometheus /metrics (KEYGATE_METRICS_LISTEN).
EXPOSE 50051 9090
# Asks the overall health service on the default plaintext port; with TLS or
# another port, set KEYGATE_SERVER (and KEYGATE_CA_CERT, ...) in the container.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/keygate", "health", "--timeout", "3s"]
ENTRYPOINT ["/usr/local/bin/keygate"]
CMD ["serve"]
