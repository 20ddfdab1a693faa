# celeritas: one image for the coordinator, the workers and the CLI.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The dependencies first, in a layer of their own: it is rebuilt only when the manifest, the
# lock file, the build script or the proto contract change, not on every change of src/. The
# stub sources give cargo a crate to build them for.
# The workspace's other member (the example of docs/own-tasks.md) is not in the image, but
# cargo reads every member's manifest: it gets its manifest and stub sources too.
COPY Cargo.toml Cargo.lock build.rs ./
COPY examples/own-tasks/Cargo.toml examples/own-tasks/Cargo.toml
COPY proto proto
RUN mkdir src examples/own-tasks/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > examples/own-tasks/src/main.rs \
    && touch examples/own-tasks/src/lib.rs \
    && cargo build --release --locked -p celeritas \
    && rm -rf src
# Then the crate itself. COPY keeps the context's modification times, which may be older than
# the stubs' build: touching the sources makes cargo rebuild the crate rather than take the
# stubs' artifacts for current.
COPY migrations migrations
COPY src src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked -p celeritas \
    && cp target/release/celeritas /usr/local/bin/celeritas \
    && strip /usr/local/bin/celeritas

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --uid 10001 celeritas
COPY --from=build /usr/local/bin/celeritas /usr/local/bin/celeritas
USER celeritas
WORKDIR /home/celeritas
# gRPC, and Prometheus metrics (when the coordinator is told to listen for them beyond loopback,
# as the compose file does).
EXPOSE 50051 9464
ENTRYPOINT ["celeritas"]
# Without arguments: the one-process development mode on the embedded store.
CMD ["dev", "--listen", "0.0.0.0:50051", "--allow-insecure"]
