# Stand-in for nginx/nginx-prometheus-exporter, built from Debian packages
# (deploy/offline/README.md). Debian bookworm ships the exporter 0.11 as prometheus-nginx-exporter;
# it is linked under the official image's name and path, and runs as the official image's user.
ARG BASE_IMAGE=local/debian:bookworm
FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends prometheus-nginx-exporter \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s prometheus-nginx-exporter /usr/bin/nginx-prometheus-exporter \
    && nginx-prometheus-exporter --version

USER 1001:1001
EXPOSE 9113
# As in the official image (FROM scratch: no program to run one), none; Prometheus' `up` tells.
HEALTHCHECK NONE
ENTRYPOINT ["/usr/bin/nginx-prometheus-exporter"]
