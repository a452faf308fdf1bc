# KaggleIngest accounts in a container: a static (musl) binary on an empty
# image, running as a non-root user, with its database on the /data volume.
#
#   docker build -t kaggleingest .
#   docker run -d -p 8000:8000 -v kaggleingest-data:/data kaggleingest
#   docker exec <container> /kaggleingest user list

FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock schema.sql kaggleingest.toml ./
COPY src ./src
COPY examples ./examples
RUN cargo build --release --locked --bin kaggleingest \
 && mkdir -p /data && chown 65532:65532 /data

FROM scratch
COPY --from=build /src/target/release/kaggleingest /kaggleingest
COPY --from=build --chown=65532:65532 /data /data
USER 65532:65532
VOLUME /data
ENV KAGGLEINGEST_BIND=0.0.0.0:8000 \
    KAGGLEINGEST_DB=/data/kaggleingest.db \
    KAGGLEINGEST_LOG_FORMAT=json
EXPOSE 8000
# No curl in an empty image: the binary checks its own /readyz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["/kaggleingest", "healthcheck"]
ENTRYPOINT ["/kaggleingest"]
CMD ["serve"]
