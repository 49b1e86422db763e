# Keygate container image: a static-enough release binary on a slim Debian
# base, running as an unprivileged user; nothing is written to the root
# filesystem at run time, so it runs with readOnlyRootFilesystem.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY .cargo .cargo
COPY proto proto
COPY src src
COPY migrations migrations
COPY policies policies
COPY benches benches
COPY tests tests
RUN cargo build --release --locked --bin keygate \
    && strip target/release/keygate

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin keygate
COPY --from=build /src/target/release/keygate /usr/local/bin/keygate
USER 10001:10001
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/keygate"]
CMD ["serve"]
