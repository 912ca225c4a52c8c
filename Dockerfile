# Build stage: a release binary from the locked dependency set.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# jemalloc's build runs make.
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY src ./src
RUN cargo build --release --locked --bin gatehouse \
 && strip target/release/gatehouse

# Run stage: a slim image with the binary and the repo's config, as a non-root user.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin gatehouse
COPY --from=build /src/target/release/gatehouse /usr/local/bin/gatehouse
COPY gateway.yaml /etc/gatehouse/gateway.yaml
COPY routes /etc/gatehouse/routes
WORKDIR /etc/gatehouse
ENV GATEHOUSE_CONFIG=/etc/gatehouse/gateway.yaml \
    GATEHOUSE_LISTEN=0.0.0.0:8080 \
    GATEHOUSE_LOG_FORMAT=json
USER gatehouse
EXPOSE 8080
# The binary probes its own /health: the slim image has no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["gatehouse", "healthcheck"]
ENTRYPOINT ["gatehouse"]
CMD ["run"]
