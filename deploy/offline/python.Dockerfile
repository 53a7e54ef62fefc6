# Stand-in for python:3.12-slim-bookworm, built from Debian packages (deploy/offline/README.md).
# Debian's python3 is 3.11; pip is only available inside a venv (python3 -m venv).
ARG BASE_IMAGE=local/debian:bookworm
FROM ${BASE_IMAGE}

ARG DEBIAN_FRONTEND=noninteractive

ENV LANG=C.UTF-8

# Versions come from the bookworm (+updates, +security) archive the base image points at;
# pinning Debian revisions would only break when the security archive moves on.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates \
        python3 \
        python3-venv \
        tini \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /usr/bin/python3 /usr/local/bin/python \
    && python --version \
    && python3 -m venv --help >/dev/null \
    && test -x /usr/bin/tini

# A base image, like the official one: the images built on it declare their own check.
HEALTHCHECK NONE
CMD ["python3"]
