# Multi-stage build: release binary in a Rust image, run in a slim one.
#   docker build -t switchyard .
#   docker run -p 8080:8080 -v $PWD/config:/etc/switchyard:ro switchyard
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p switchyard && strip target/release/switchyard

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home switchyard
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY config/switchyard.yaml /etc/switchyard/switchyard.yaml
USER 10001
# Mount your own config over /etc/switchyard/ (a ConfigMap in Kubernetes).
VOLUME ["/etc/switchyard"]
EXPOSE 8080 9901
# `status` asks the admin API (admin.bind, default 127.0.0.1:9901) and
# exits non-zero when it does not answer: no curl needed in the image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/switchyard", "status", "--admin", "127.0.0.1:9901"]
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["run", "-c", "/etc/switchyard/switchyard.yaml"]
