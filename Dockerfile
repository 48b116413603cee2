# fluxgate: one static binary on a distroless base, running as a non-root user.
# Build: docker build -t fluxgate .   Run: docker run -p 8080:8080 -e FLUXGATE__UPSTREAM__KEYS=... fluxgate

FROM rust:1.95-bookworm AS build
# musl gives a fully static binary; ring (TLS) compiles C, hence musl-tools.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY crates/bfl-sim/Cargo.toml crates/bfl-sim/Cargo.toml
RUN mkdir -p src benches tests/api crates/bfl-sim/src \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && echo 'fn main() {}' > benches/gateway.rs && echo 'fn main() {}' > tests/api/main.rs \
 && echo 'fn main() {}' > crates/bfl-sim/src/main.rs && touch crates/bfl-sim/src/lib.rs \
 && cargo build --release --locked --target x86_64-unknown-linux-musl --bin fluxgate \
 && rm -rf src benches tests crates/bfl-sim/src
COPY config config
COPY crates crates
COPY src src
COPY benches benches
COPY tests tests
# The simulator (default feature) stays in: `docker run IMAGE demo` works with no BFL key.
RUN touch src/main.rs src/lib.rs crates/bfl-sim/src/lib.rs crates/bfl-sim/src/main.rs \
 && cargo build --release --locked --target x86_64-unknown-linux-musl --bin fluxgate \
 && cp target/x86_64-unknown-linux-musl/release/fluxgate /fluxgate

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /fluxgate /usr/local/bin/fluxgate
USER nonroot:nonroot
ENV FLUXGATE__SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080
# SIGTERM drains: in-flight requests and background jobs finish (server.shutdown_grace_secs).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/fluxgate", "health"]
ENTRYPOINT ["/usr/local/bin/fluxgate"]
CMD ["serve"]
