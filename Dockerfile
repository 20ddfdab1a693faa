# celeritas: one image for the coordinator, the workers and the CLI.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY migrations migrations
COPY src src
RUN cargo build --release --locked \
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
EXPOSE 50051
ENTRYPOINT ["celeritas"]
# Without arguments: the one-process development mode on the embedded store.
CMD ["dev", "--listen", "0.0.0.0:50051"]
