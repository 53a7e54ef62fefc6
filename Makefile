# One entry point for every task: `make help` lists them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

# --- Settings (override on the command line: make up SERVER=daphne REPLICAS=2) --------------------
SERVER ?= uvicorn
REPLICAS ?= 1
TLS ?= 0
# 1 = Prometheus and Nginx's exporter too (compose.yaml's profile `monitoring`), Prometheus on
# http://127.0.0.1:$(PROMETHEUS_PORT)/
MONITORING ?= 0
PROMETHEUS_PORT ?= 9090
# 1: the channel layer on Redis with Sentinel (compose.redis-ha.yaml; README "Redis with Sentinel")
REDIS_HA ?= 0
# 1: the channel layer sharded over two Redis (compose.redis-sharded.yaml; README "Sharding the channel layer")
REDIS_SHARDED ?= 0
HTTP_PORT ?= 8000
HTTPS_PORT ?= 8443
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROJECT ?= realtime-django
# Docker Swarm stack name (make swarm-up): its own volumes, never the compose project's
STACK ?= realtime-django-swarm

# The server variants, from the one registry (deploy/servers.txt, read by deploy/registry.sh).
SERVERS := $(shell sh deploy/registry.sh names)
# Which variant serves /ws/ for SERVER (itself, or an ASGI sidecar for WSGI-only servers).
WS_SERVER := $(shell sh deploy/registry.sh websockets "$(SERVER)")

# Air-gapped build: stand-in base images and a local wheelhouse (deploy/offline/README.md).
# scripts/bootstrap.sh decides on the first `make up` or `make test` (the official images when a
# registry answers, else the stand-ins), says so, and keeps the decision in .cache/stack.env.
# OFFLINE=1 or OFFLINE=0 on the command line or in the environment overrides it.
ifeq ($(origin OFFLINE),undefined)
OFFLINE := $(shell sed -n 's/^OFFLINE=//p' .cache/stack.env 2>/dev/null)
endif
ifeq ($(OFFLINE),1)
include deploy/offline/images.env
export PYTHON_IMAGE NGINX_IMAGE REDIS_IMAGE POSTGRES_IMAGE PROMETHEUS_IMAGE NGINX_EXPORTER_IMAGE
export OFFLINE_WHEELS := 1
endif

# `docker compose` (v2) when present, else `docker-compose` (v1.29).
COMPOSE_BIN := $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
# The `ws` sidecar runs when another variant serves SERVER's WebSockets (non-empty: it does).
SIDECAR := $(filter-out $(SERVER),$(WS_SERVER))
COMPOSE_PROFILES_ARGS := $(if $(SIDECAR),--profile sidecar) $(if $(filter 1,$(MONITORING)),--profile monitoring)
# Every profile, for the commands that must reach all of the project's services (down, clean).
COMPOSE_ALL_PROFILES := --profile sidecar --profile monitoring
# TLS=1 lays compose.tls.yaml over compose.yaml: the HTTPS port and the certificate for Nginx.
COMPOSE_FILES := -f compose.yaml $(if $(filter 1,$(TLS)),-f compose.tls.yaml)
# REDIS_HA=1 lays compose.redis-ha.yaml over them: a replica and three sentinels beside Redis.
# (make down and make clean need no file of it: --remove-orphans removes its services.)
COMPOSE_FILES += $(if $(filter 1,$(REDIS_HA)),-f compose.redis-ha.yaml)
# REDIS_SHARDED=1 lays compose.redis-sharded.yaml over them: a second Redis, the layer over both.
COMPOSE_FILES += $(if $(filter 1,$(REDIS_SHARDED)),-f compose.redis-sharded.yaml)
COMPOSE := $(COMPOSE_BIN) -p $(PROJECT) $(COMPOSE_FILES) $(COMPOSE_PROFILES_ARGS)
export SERVER WS_SERVER TLS HTTP_PORT HTTPS_PORT PROMETHEUS_PORT

.PHONY: help
help: ## List the targets
	@echo "Start here (each installs what it needs first, asking before it installs):"
	@echo "  make up SERVER=uvicorn   the whole stack on http://127.0.0.1:$(HTTP_PORT) (make down stops it)"
	@echo "  make test                every test suite, what CI runs"
	@echo "  make dev                 the quickest look: the app alone on SQLite, no Docker"
	@echo; echo "Every target:"
	@awk 'BEGIN { FS = ":.*## " } /^[a-z0-9-]+:.*## / { printf "  \033[1m%-16s\033[0m %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
	@echo; echo "  SERVER = one of: $(SERVERS)"

# --- Local development ---------------------------------------------------------------------------
$(VENV)/.installed: requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements/dev.txt
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create the virtualenv from the lock file

.PHONY: dev
dev: venv ## Run the app on the embedded defaults (SQLite, in-memory layer) on http://127.0.0.1:8000
	cd app && export DJANGO_DEBUG=1 DJANGO_HTTPS=0 && ../$(PY) manage.py migrate --noinput \
	  && exec ../$(VENV)/bin/uvicorn config.asgi:application --host 127.0.0.1 --port 8000 --reload

.PHONY: lint
lint: venv ## ruff, shellcheck and hadolint (settings: pyproject.toml, .shellcheckrc, .hadolint.yaml)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	shellcheck .ci/run $$(find . -name '*.sh' -not -path './.venv/*' -not -path './.cache/*')
	$(VENV)/bin/hadolint $$(find deploy -name Dockerfile -o -name '*.Dockerfile')

.PHONY: lock
lock: ## Re-resolve requirements/*.txt from pyproject.toml (needs uv)
	uv pip compile pyproject.toml --universal --python-version 3.11 --quiet -o requirements/runtime.txt
	uv pip compile pyproject.toml --extra dev --extra loadtest --universal --python-version 3.11 \
	  -c requirements/runtime.txt --quiet -o requirements/dev.txt
	uv pip compile requirements/loadtest.in -c requirements/dev.txt --universal --python-version 3.11 \
	  --quiet -o requirements/loadtest.txt

# --- Tests ---------------------------------------------------------------------------------------
.PHONY: test
test: ## Every test (what CI runs), after installing what they need (host packages, Docker, images)
	@scripts/bootstrap.sh test
	@E2E_REQUIRED=1 $(MAKE) test-all

.PHONY: test-all
# test-swarm comes last: it turns the engine into a single-node swarm, which must not overlap a
# compose stack's networks.
test-all: lint test-unit test-services test-integration test-deploy test-e2e test-security test-faults test-bench test-cluster-short test-swarm ## Every test, on a machine set up already

.PHONY: test-unit
test-unit: venv ## Unit tests on the embedded defaults, the installer, the Nginx config, the load-test users, the bench
	$(VENV)/bin/pytest tests/unit tests/stackctl tests/scripts tests/nginx tests/loadtests tests/bench -q -m "not integration and not e2e"

.PHONY: test-services
test-services: venv ## The unit tests again, on a throwaway PostgreSQL and Redis
	$(PY) -m tests.harness services -- $(VENV)/bin/pytest tests/unit -q

.PHONY: test-integration
test-integration: venv ## Real server processes, Redis and PostgreSQL, over real sockets
	$(VENV)/bin/pytest tests/integration -q -m integration

.PHONY: test-deploy
test-deploy: venv ## Production material: systemd units, Kubernetes overlays, the Swarm stack file, Prometheus' rules
	$(VENV)/bin/pytest tests/deploy -q -m "not e2e"

.PHONY: test-swarm
test-swarm: venv ## The Swarm stack on a single-node swarm: deploy, chat, rolling update (needs Docker)
	$(VENV)/bin/pytest tests/deploy/test_swarm.py -q -m e2e

.PHONY: test-cluster
test-cluster: venv ## The stack on a three-node Swarm on this machine: failover, rolling update, rejoin (root)
	$(VENV)/bin/pytest tests/cluster -q -m cluster

.PHONY: test-cluster-short
test-cluster-short: venv ## test-cluster without the rolling update and the rejoin (what `make test` runs)
	$(VENV)/bin/pytest tests/cluster -q -m "cluster and not cluster_full"

.PHONY: test-e2e
test-e2e: venv ## The compose stack through Nginx, for every variant; MONITORING=1 on MONITORING_VARIANTS (needs Docker)
	$(VENV)/bin/pytest tests/e2e -q -m e2e

.PHONY: test-security
test-security: venv ## Hostile input, hardening and TLS on the compose stack (SECURITY_VARIANTS, SECURITY_TLS_VARIANTS)
	$(VENV)/bin/pytest tests/security -q -m e2e

.PHONY: test-faults
test-faults: venv ## Faults injected into the running stack, each test module on one of FAULT_VARIANTS in turn (what `make test` runs)
	FAULT_SPREAD=1 $(VENV)/bin/pytest tests/faults -q -m faults

.PHONY: test-faults-full
test-faults-full: venv ## Every fault on every variant of FAULT_VARIANTS ("daphne gunicorn" by default, "all"), REDIS_HA_VARIANTS (uvicorn)
	FAULT_SPREAD=0 $(VENV)/bin/pytest tests/faults -q -m faults

# --- The stack -----------------------------------------------------------------------------------
.PHONY: check-server
check-server:
	@if [ -z "$(filter $(SERVER),$(SERVERS))" ]; then \
	  echo "Unknown SERVER '$(SERVER)'. Valid: $(SERVERS)" >&2; exit 2; fi
	@if [ -z "$(filter 0 1,$(MONITORING))" ]; then \
	  echo "MONITORING must be 0 or 1, got '$(MONITORING)'" >&2; exit 2; fi
	@if [ "$(REDIS_HA)$(REDIS_SHARDED)" = 11 ]; then \
	  echo "REDIS_HA=1 and REDIS_SHARDED=1 do not combine: pick one" >&2; exit 2; fi

.PHONY: secrets
secrets: ## Generate local random secrets under .cache/secrets (once)
	@scripts/make-secrets.sh .cache/secrets

.PHONY: tls-cert
tls-cert: ## Generate the local self-signed HTTPS certificate under .cache/secrets (for TLS=1)
	@scripts/make-tls-cert.sh .cache/secrets

.PHONY: host
host: ## Install and start what the stack needs: Docker, compose, base images (make up does it first)
	@scripts/bootstrap.sh stack

# Each target that needs Docker runs `host` first, then the real work in a second make, which reads
# the image choice that `host` has just made (OFFLINE, above).
.PHONY: build
build: check-server host ## Build the app image
	@$(MAKE) image

.PHONY: image
image: check-server secrets $(if $(filter 1,$(OFFLINE)),wheelhouse)
	$(COMPOSE) build app

.PHONY: up
up: check-server host ## Start the stack: make up SERVER=<variant> [REPLICAS=n] [TLS=1] [MONITORING=1] [REDIS_HA=1 | REDIS_SHARDED=1] (installs Docker if needed)
	@$(MAKE) stack-up

.PHONY: stack-up
stack-up: image $(if $(filter 1,$(TLS)),tls-cert)
	$(COMPOSE) up -d --scale app=$(REPLICAS) $(if $(SIDECAR),--scale ws=$(REPLICAS)) --remove-orphans
	scripts/wait-healthy.sh $(PROJECT) 180
	@echo "$(SERVER) is up: $(if $(filter 1,$(TLS)),https://127.0.0.1:$(HTTPS_PORT)/,http://127.0.0.1:$(HTTP_PORT)/)"
	@$(if $(filter 1,$(MONITORING)),echo "Prometheus: http://127.0.0.1:$(PROMETHEUS_PORT)/ (targets: /targets)",:)

.PHONY: down
down: ## Stop the stack (data kept)
	$(COMPOSE_BIN) -p $(PROJECT) $(COMPOSE_ALL_PROFILES) down --remove-orphans

.PHONY: clean
clean: ## Stop the stack and drop its volumes (database included)
	$(COMPOSE_BIN) -p $(PROJECT) $(COMPOSE_ALL_PROFILES) down --remove-orphans --volumes

.PHONY: compose
compose: ## Any compose command on this stack (project, files, profiles): make compose ARGS="restart redis"
	@$(COMPOSE) $(ARGS)

.PHONY: logs
logs: ## Follow the stack's logs
	$(COMPOSE) logs -f --tail=100

.PHONY: ps
ps: ## List the stack's containers
	$(COMPOSE) ps

.PHONY: shell
shell: ## A Django shell in an app container
	$(COMPOSE) exec app python manage.py shell

# --- Docker Swarm (deploy/swarm/) ---------------------------------------------------------------
SWARM_STACK := STACK=$(STACK) SERVER=$(SERVER) REPLICAS=$(REPLICAS) HTTP_PORT=$(HTTP_PORT) \
	HTTPS_PORT=$(HTTPS_PORT) TLS=$(TLS) MONITORING=$(MONITORING) PROMETHEUS_PORT=$(PROMETHEUS_PORT) \
	REDIS_HA=$(REDIS_HA) deploy/swarm/stack.sh

.PHONY: swarm-up
swarm-up: check-server build ## Deploy on a swarm: make swarm-up SERVER=<variant> [REPLICAS=n] [STACK=name] [TLS=1] [MONITORING=1] [REDIS_HA=1]
	@$(MAKE) swarm-deploy

.PHONY: swarm-deploy
swarm-deploy: check-server $(if $(filter 1,$(TLS)),tls-cert)
	$(SWARM_STACK) deploy

.PHONY: swarm-down
swarm-down: ## Remove the swarm stack (volumes kept)
	$(SWARM_STACK) rm

.PHONY: swarm-clean
swarm-clean: ## Remove the swarm stack and its volumes (database included)
	$(SWARM_STACK) purge

# --- A multi-node Swarm on this machine (deploy/swarm/cluster.sh; root) -------------------------
CLUSTER_SH := deploy/swarm/cluster.sh

.PHONY: cluster-up
cluster-up: build ## Three Swarm nodes on this machine (root), each its own engine and namespace, images loaded
	@$(MAKE) cluster-start

.PHONY: cluster-start
cluster-start:
	$(CLUSTER_SH) up
	$(CLUSTER_SH) load-images

.PHONY: cluster-deploy
cluster-deploy: check-server ## The stack across the cluster: make cluster-deploy SERVER=<variant> [REPLICAS=n] [STACK=name] [REDIS_HA=1]
	STACK=$(STACK) REDIS_HA=$(REDIS_HA) $(if $(filter command line,$(origin REPLICAS)),REPLICAS=$(REPLICAS)) $(CLUSTER_SH) deploy

.PHONY: cluster-down
cluster-down: ## Remove the cluster: engines, containers, namespaces, cgroups, data roots
	$(CLUSTER_SH) down

# --- Load generation at scale (loadtests/compose.yaml) -------------------------------------------
LOADGEN_WORKERS ?= 2
LOADGEN_PROJECT ?= realtime-django-loadgen
LOADGEN_HOST ?= http://127.0.0.1:$(HTTP_PORT)
LOADGEN_RESULTS ?= $(CURDIR)/results/loadgen
LOADGEN := $(COMPOSE_BIN) -p $(LOADGEN_PROJECT) -f loadtests/compose.yaml
export LOADGEN_WORKERS LOADGEN_HOST LOADGEN_RESULTS

.PHONY: loadgen
loadgen: $(if $(filter 1,$(OFFLINE)),wheelhouse) ## Locust master + LOADGEN_WORKERS workers, headless and bounded, against LOADGEN_HOST
	mkdir -p "$(LOADGEN_RESULTS)"
	$(LOADGEN) build
	@# Follows the master alone (workers exit first, when it tells them to); its exit code is the run's.
	trap '$(LOADGEN) down; echo "reports: $(LOADGEN_RESULTS)/"' EXIT; \
	LOADGEN_USER=$$(id -u):$$(id -g) $(LOADGEN) up -d --scale locust-worker=$(LOADGEN_WORKERS); \
	$(LOADGEN) logs -f --no-log-prefix locust-master; \
	exit "$$(docker wait "$$($(LOADGEN) ps -q locust-master)")"

# --- Load tests and the side-by-side comparison (loadtests/bench/) -------------------------------
SCENARIO ?= http
USERS ?=
DURATION ?=

.PHONY: loadtest
loadtest: check-server venv ## Locust headless on the stack (up if needed): make loadtest SERVER=x [SCENARIO=http|echo|chat|capacity|fanout|sockets|soak] [USERS=n] [DURATION=60s] [REPLICAS=n] [SOAK_MINUTES=30]
	$(PY) -m loadtests.bench.loadtest --server $(SERVER) --scenario $(SCENARIO) --replicas $(REPLICAS) \
	  --project $(PROJECT) --port $(HTTP_PORT) $(if $(USERS),--users $(USERS)) $(if $(DURATION),--duration $(DURATION))

.PHONY: profile
profile: check-server venv ## Where a request's CPU goes: make profile SERVER=x [ENDPOINT=/api/ping] [DURATION=20s] [HELLO=1] (py-spy on the host)
	$(PY) -m loadtests.bench.profile --server $(SERVER) --project $(PROJECT) --port $(HTTP_PORT) \
	  --endpoint $(or $(ENDPOINT),/api/ping) --duration $(or $(DURATION),20s) $(if $(filter 1,$(HELLO)),--hello)

.PHONY: bench
bench: venv ## Every variant side by side: results/<timestamp>/report.md (BENCH_QUICK=1: a short check; .env.example: BENCH_*)
	$(PY) -m loadtests.bench

.PHONY: test-bench
test-bench: venv ## The bench's unit tests, and its pipeline end to end in quick mode on two variants (needs Docker)
	$(VENV)/bin/pytest tests/bench -q

# --- Air-gapped build ----------------------------------------------------------------------------
.PHONY: wheelhouse
wheelhouse: ## Build requirements/wheelhouse/ from the lock files with the host's pip (loadtest/: the load generator's)
	deploy/offline/build-wheelhouse.sh
	WHEELHOUSE=requirements/wheelhouse/loadtest deploy/offline/build-wheelhouse.sh requirements/loadtest.txt

.PHONY: offline-images
offline-images: ## Build stand-in base images from Debian packages (no registry needed)
	deploy/offline/build-images.sh
