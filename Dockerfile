# Amps container image.
#   docker build -t amps-server .
#   docker run -d -p 5000:5000 --name amps -e AMPS_TOKEN=<your token> \
#     -v $(pwd)/config.yaml:/app/config.yaml --restart unless-stopped amps-server
# The container listens on 0.0.0.0, so Amps insists on a real token (config or AMPS_TOKEN).
# Edit config.yaml on the host, then `docker kill -s HUP amps` to reload it.

# --- build: Rust on Debian 12 with the libav development packages -------------------------
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      clang libclang-dev pkg-config \
      libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libavdevice-dev \
      libswscale-dev libswresample-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs config.yaml ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin amps \
 && strip target/release/amps

# --- runtime: slim Debian 12 with the libav runtime libraries and the ffmpeg CLI ----------
FROM debian:bookworm-slim
# runtime-packages (kept on one line: tests/docker.rs checks that they resolve with apt and
# cover every library the binary links)
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libavcodec59 libavformat59 libavutil57 libavfilter8 libavdevice59 libswscale6 libswresample4 ffmpeg ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin amps \
 && mkdir -p /app && chown amps /app
COPY --from=build /src/target/release/amps /usr/local/bin/amps
COPY --chown=amps config.yaml /app/config.yaml
WORKDIR /app
USER amps
ENV AMPS_CONFIG=/app/config.yaml \
    AMPS_HOST=0.0.0.0 \
    AMPS_PORT=5000
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["amps", "health"]
# tini is PID 1: it forwards SIGTERM/SIGHUP to amps and reaps any orphaned process that a
# custom_ffmpeg command leaves behind.
ENTRYPOINT ["/usr/bin/tini", "--", "amps"]
CMD ["serve"]
