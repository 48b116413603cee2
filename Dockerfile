# fluxgate: the release binary (default features: the simulator for `demo`, jemalloc) on a
# distroless glibc base, running as a non-root user.
#
#   docker build -t fluxgate .
#   docker run --rm -p 127.0.0.1:8080:8080 fluxgate demo             # no BFL key needed
#   docker run -p 8080:8080 -e BFL_API_KEY=... -e FLUXGATE__SERVER__API_KEYS=sk-... fluxgate
#   docker stop -t 210 CONTAINER                                       # drain 3 s + grace 200 s
#
# Build and runtime are both Debian 12 (bookworm), so the binary's glibc matches the base's.
# The toolchain is the one the project is developed with (rust-version in Cargo.toml, the MSRV, is
# older; any toolchain at or above it builds): override with --build-arg RUST_VERSION=1.xx.
ARG RUST_VERSION=1.95

# cargo-chef builds the dependencies from a recipe of the manifests alone (it recreates the
# [[bench]]/[[bin]] targets and the workspace member crates/bfl-sim as stubs), so that layer is
# cached until Cargo.toml or Cargo.lock change. The full rust image has the cc and make that
# tikv-jemalloc-sys (jemalloc from source) and ring need.
FROM rust:${RUST_VERSION}-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
# The same selection as the build below (release, default features, the fluxgate binary), so the
# cooked dependencies are exactly the ones it reuses.
RUN cargo chef cook --release --locked --bin fluxgate --recipe-path recipe.json
# The whole workspace: src (config/default.toml is compiled in with include_str!), crates/bfl-sim,
# and benches/ and tests/, which the manifest names and cargo needs to find to load it.
COPY . .
RUN cargo build --release --locked --bin fluxgate \
 && install -D -m 0755 target/release/fluxgate /out/fluxgate

# glibc, libgcc and CA certificates, no shell; user nonroot (65532), a writable /tmp (mode 1777)
# for the upload spool (uploads.spool_dir defaults to <temp>/fluxgate-spool).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/fluxgate /usr/local/bin/fluxgate
USER nonroot:nonroot
# Every subcommand reads this: `serve` (whose default it already is), `demo` (which otherwise
# listens on loopback only, unreachable through -p) and `health` (which probes this port).
ENV FLUXGATE__SERVER__LISTEN=0.0.0.0:8080
# The usage journal (usage.path) lives in the nonroot user's home; mount a volume there to keep
# usage across containers: -v fluxgate-usage:/home/nonroot
WORKDIR /home/nonroot
ENV FLUXGATE__USAGE__PATH=/home/nonroot/fluxgate-usage.jsonl
EXPOSE 8080
# SIGTERM drains: /readyz turns 503, requests are served for server.drain_delay_ms (3 s), then
# running jobs get server.shutdown_grace_secs (200 s). Stop with `docker stop -t 210`.
STOPSIGNAL SIGTERM
# The binary probes http://127.0.0.1:<listen port>/healthz itself (2 s timeout): no curl needed.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/fluxgate", "health"]
ENTRYPOINT ["/usr/local/bin/fluxgate"]
CMD ["serve"]
