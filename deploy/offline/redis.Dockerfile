# Stand-in for redis:7.4, built from Debian packages (deploy/offline/README.md).
# Debian bookworm ships redis 7.0.
ARG BASE_IMAGE=local/debian:bookworm
FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive

# User redis uid/gid 999 as in the official image, created before the package so the
# package's postinst keeps it.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 redis \
    && useradd --system --uid 999 --gid redis --no-create-home --home-dir /var/lib/redis \
        --shell /usr/sbin/nologin redis \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        redis-server \
        redis-tools \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o redis -g redis -m 0755 /data \
    && test "$(id -u redis):$(id -g redis)" = 999:999 \
    && redis-server --version \
    && redis-cli --version

COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh

VOLUME /data
WORKDIR /data

EXPOSE 6379
HEALTHCHECK --interval=5s --timeout=3s --retries=10 CMD ["redis-cli", "ping"]
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
