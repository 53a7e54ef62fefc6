# The load generator's image: Locust, the WebSocket client and the repository's loadtests/ package
# (locustfiles + lib). Used by loadtests/compose.yaml (`make loadgen`, Locust's distributed mode on
# one machine) and by deploy/k8s/loadtest/ (on a cluster). Build context: the repository root.
#   docker build -f deploy/loadtest.Dockerfile -t registry.example.com/realtime-django-loadtest:0.1.0 .
# Like deploy/Dockerfile: the base image is a build argument, and OFFLINE_WHEELS=1 installs from
# requirements/wheelhouse/loadtest/ only (`make wheelhouse` fills it from requirements/loadtest.txt).
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- build: a virtualenv from the load generator's lock file -------------------------------------
FROM ${PYTHON_IMAGE} AS build

ARG OFFLINE_WHEELS=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /opt/build
COPY requirements/loadtest.txt requirements/
COPY requirements/wheelhouse/ requirements/wheelhouse/
RUN python3 -m venv /opt/venv \
    && if [ "$OFFLINE_WHEELS" = 1 ]; then set -- --no-index; else set --; fi \
    && /opt/venv/bin/pip install "$@" --find-links requirements/wheelhouse/loadtest -r requirements/loadtest.txt
# A build stage never runs as a container.
HEALTHCHECK NONE

# --- runtime -------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

RUN groupadd --system --gid 10001 locust \
    && useradd --system --uid 10001 --gid locust --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin locust

COPY --from=build /opt/venv /opt/venv
COPY loadtests/ /opt/loadtests/loadtests/

# The locustfiles import loadtests.lib: the package's parent folder is on the path.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/loadtests \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /opt/loadtests
USER 10001:10001
EXPOSE 8089 5557
# Master and workers are watched by their orchestrator: compose ends the run with the master's exit
# code, Kubernetes probes the master's port (deploy/k8s/loadtest/master.yaml).
HEALTHCHECK NONE
ENTRYPOINT ["locust"]
