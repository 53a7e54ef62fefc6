# Stand-in for prom/prometheus, built from Debian packages (deploy/offline/README.md).
# Debian bookworm ships Prometheus 2.42. Laid out like the official image: the server at
# /bin/prometheus and promtool beside it, data in /prometheus, run as nobody, and a busybox `wget`
# (the official image is busybox-based) for the compose health check.
ARG BASE_IMAGE=local/debian:bookworm
FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        busybox \
        prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /bin/busybox /usr/local/bin/wget \
    && install -d -o nobody -g nogroup -m 0755 /prometheus \
    && /bin/prometheus --version \
    && /bin/promtool --version

USER 65534:65534
WORKDIR /prometheus
VOLUME ["/prometheus"]
EXPOSE 9090
# As in the official image, none: compose.yaml and the Swarm stack define it (busybox wget).
HEALTHCHECK NONE
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
