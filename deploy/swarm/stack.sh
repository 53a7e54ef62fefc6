#!/usr/bin/env bash
# Deploys, waits for and removes the stack of deploy/swarm/stack.yaml on a Docker Swarm.
#
#   stack.sh deploy      docker stack deploy (create or update), then `wait`
#   stack.sh config      print what `deploy` would deploy (docker stack config), deploy nothing
#   stack.sh wait        until every service runs its tasks healthy (no update under way) and the
#                        one-shot tasks are done
#   stack.sh rm          remove the stack and wait until its containers and networks are gone
#   stack.sh purge       `rm`, then remove the stack's volumes too (the database!)
#
# Settings (environment; the Makefile's `swarm-*` targets pass them):
#   STACK           stack name, prefix of every service, volume, secret and config
#                   (default realtime-django-swarm: never the compose project's volumes)
#   SERVER          variant, one of deploy/servers.txt (default uvicorn)
#   REPLICAS        app tasks (default 2); the gunicorn variant gets as many `ws` tasks
#   HTTP_PORT       port Nginx publishes on each edge node, on every interface (default 8000)
#   SECRETS_DIR     folder with django_secret_key and postgres_password (default .cache/secrets,
#                   created by `make secrets`)
#   MONITORING      1: Prometheus and Nginx's exporter too (monitoring.yaml laid over stack.yaml),
#                   Prometheus on PROMETHEUS_PORT (default 9090) of the node it runs on
#   TLS             1: HTTPS on HTTPS_PORT too (tls.yaml laid over stack.yaml), with
#                   TLS_DIR/tls_certificate.pem and tls_private_key.pem (default: SECRETS_DIR,
#                   where `make tls-cert` writes a self-signed pair)
#   REDIS_HA        1: the channel layer on Redis with Sentinel (redis-ha.yaml laid over
#                   stack.yaml): a replica and three sentinels beside `redis` (default 0)
#   SWARM_WAIT_TIMEOUT     seconds `wait` and `rm` wait at most (default 300)
#   SWARM_RESOLVE_IMAGE    docker stack deploy --resolve-image (default never: local images;
#                          use always with a registry so every node runs the same digest)
#   APP_IMAGE       the app's image (default realtime-django-stack:local, what `make build` makes)
# and every ${VAR} of stack.yaml (NGINX_IMAGE, APP_CPUS, ..., see .env.example).
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "$here/../.." && pwd)

: "${STACK:=realtime-django-swarm}"
: "${SERVER:=uvicorn}"
: "${REPLICAS:=2}"
: "${HTTP_PORT:=8000}"
: "${SECRETS_DIR:=$repo/.cache/secrets}"
: "${TLS:=0}"
: "${MONITORING:=0}"
: "${PROMETHEUS_PORT:=9090}"
: "${REDIS_HA:=0}"
: "${TLS_DIR:=$SECRETS_DIR}"
: "${HTTPS_PORT:=8443}"
: "${SWARM_WAIT_TIMEOUT:=300}"
: "${SWARM_RESOLVE_IMAGE:=never}"
: "${APP_IMAGE:=realtime-django-stack:local}"
# The one-shot services: done when their tasks completed; the others must keep theirs running.
ONE_SHOT_SERVICES="migrate static"

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'stack.sh: error: %s\n' "$*" >&2
    exit 1
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

# --- Settings derived from the repository: the variant registry and nginx/ -------------------------

valid_servers() { sh "$repo/deploy/registry.sh" names; }
ws_server_of() { sh "$repo/deploy/registry.sh" websockets "$1"; }

check_settings() {
    [[ $STACK =~ ^[a-zA-Z0-9][a-zA-Z0-9_.-]*$ ]] || die "STACK '$STACK': letters, digits, '_', '.', '-' only"
    valid_servers | grep -qxF -- "$SERVER" ||
        die "unknown SERVER '$SERVER'. Valid: $(valid_servers | tr '\n' ' ')"
    { is_uint "$REPLICAS" && ((REPLICAS >= 1)); } || die "REPLICAS must be a whole number >= 1, got '$REPLICAS'"
    { is_uint "$HTTP_PORT" && ((HTTP_PORT >= 1 && HTTP_PORT <= 65535)); } ||
        die "HTTP_PORT must be a port number, got '$HTTP_PORT'"
    [[ $TLS == 0 || $TLS == 1 ]] || die "TLS must be 0 or 1, got '$TLS'"
    [[ $MONITORING == 0 || $MONITORING == 1 ]] || die "MONITORING must be 0 or 1, got '$MONITORING'"
    { is_uint "$PROMETHEUS_PORT" && ((PROMETHEUS_PORT >= 1 && PROMETHEUS_PORT <= 65535)); } ||
        die "PROMETHEUS_PORT must be a port number, got '$PROMETHEUS_PORT'"
    [[ $REDIS_HA == 0 || $REDIS_HA == 1 ]] || die "REDIS_HA must be 0 or 1, got '$REDIS_HA'"
    { is_uint "$HTTPS_PORT" && ((HTTPS_PORT >= 1 && HTTPS_PORT <= 65535)); } ||
        die "HTTPS_PORT must be a port number, got '$HTTPS_PORT'"
    is_uint "$SWARM_WAIT_TIMEOUT" || die "SWARM_WAIT_TIMEOUT must be a number of seconds, got '$SWARM_WAIT_TIMEOUT'"
    case $SWARM_RESOLVE_IMAGE in always | changed | never) ;;
        *) die "SWARM_RESOLVE_IMAGE must be always, changed or never, got '$SWARM_RESOLVE_IMAGE'" ;;
    esac
}

check_swarm() {
    local state
    state=$(docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}') ||
        die "no Docker engine answers"
    [[ $state == "active true" ]] ||
        die "this engine is not a swarm manager (state: $state); run 'docker swarm init' or use a manager"
}

# The hash of some files' names and contents: the version in the names of immutable Swarm objects.
content_hash() { (cd "$1" && shift && sha256sum -- "$@" | sha256sum | cut -c1-12); }

# Files of a folder as Swarm configs of one service, each mounted at TARGET/<its path in the
# folder>: a stack file to lay over stack.yaml. Written at each deploy, so a new file needs no edit
# here. Each name carries the file's hash: configs cannot change in place.
write_configs() { # SERVICE FOLDER TARGET FILE... (paths relative to FOLDER)
    local service=$1 folder=$2 target=$3 path
    shift 3
    printf '# Generated by deploy/swarm/stack.sh from %s/ for one deploy.\nservices:\n  %s:\n    configs:\n' \
        "${folder#"$repo"/}" "$service"
    for path in "$@"; do
        printf '      - {source: %s_%s, target: %s/%s}\n' "$service" "${path//[^A-Za-z0-9]/_}" "$target" "$path"
    done
    printf 'configs:\n'
    for path in "$@"; do
        printf '  %s_%s:\n    name: %s_%s-%s\n    file: %s\n' "$service" "${path//[^A-Za-z0-9]/_}" \
            "$STACK" "$service" "$(content_hash "$folder" "$path")" "$folder/$path"
    done
}

# nginx/ (but its README), where the container's command expects the folder.
write_nginx_configs() {
    local path files=()
    for path in "$repo"/nginx/*; do
        [[ -f $path && ${path##*/} != README.md ]] && files+=("${path##*/}")
    done
    write_configs nginx "$repo/nginx" /etc/nginx/stack "${files[@]}"
}

# Prometheus' configuration and rules (deploy/prometheus/), where the image expects them.
write_prometheus_configs() {
    local path files=(prometheus.yml)
    for path in "$repo"/deploy/prometheus/rules/*.yml; do
        files+=("rules/${path##*/}")
    done
    write_configs prometheus "$repo/deploy/prometheus" /etc/prometheus "${files[@]}"
}

# Exports what stack.yaml (and tls.yaml) need beyond the user's settings; sets stack_files.
# Secrets and configs are immutable in Swarm: their names carry a hash of their content.
derive() {
    local ws_server nginx_configs prometheus_configs
    stack_files=(-c "$here/stack.yaml")
    SECRETS_DIR=$(cd -- "$SECRETS_DIR" 2>/dev/null && pwd) ||
        die "SECRETS_DIR ${SECRETS_DIR} does not exist: run 'make secrets' (or point SECRETS_DIR at your files)"
    for name in django_secret_key postgres_password; do
        [[ -s $SECRETS_DIR/$name ]] || die "$SECRETS_DIR/$name is missing or empty: run 'make secrets'"
    done
    SECRET_KEY_VERSION=$(content_hash "$SECRETS_DIR" django_secret_key)
    DATABASE_PASSWORD_VERSION=$(content_hash "$SECRETS_DIR" postgres_password)
    ws_server=$(ws_server_of "$SERVER")
    WS_SERVER=$ws_server
    if [[ $ws_server == "$SERVER" ]]; then
        WS_HOST=app WS_REPLICAS=0
    else
        WS_HOST=ws WS_REPLICAS=$REPLICAS
    fi
    nginx_configs=$(mktemp "${TMPDIR:-/tmp}/swarm-nginx-configs.XXXXXX")
    prometheus_configs=$(mktemp "${TMPDIR:-/tmp}/swarm-prometheus-configs.XXXXXX")
    # shellcheck disable=SC2064  # the paths are fixed now
    trap "rm -f '$nginx_configs' '$prometheus_configs'" EXIT
    write_nginx_configs >"$nginx_configs"
    stack_files+=(-c "$nginx_configs")
    if [[ $MONITORING == 1 ]]; then
        write_prometheus_configs >"$prometheus_configs"
        stack_files+=(-c "$here/monitoring.yaml" -c "$prometheus_configs")
    fi
    if [[ $TLS == 1 ]]; then
        TLS_DIR=$(cd -- "$TLS_DIR" 2>/dev/null && pwd) || die "TLS_DIR ${TLS_DIR} does not exist"
        for name in tls_certificate.pem tls_private_key.pem; do
            [[ -s $TLS_DIR/$name ]] || die "TLS=1 needs $TLS_DIR/$name: run 'make tls-cert' (or set TLS_DIR)"
        done
        TLS_VERSION=$(content_hash "$TLS_DIR" tls_certificate.pem tls_private_key.pem)
        export TLS_DIR TLS_VERSION
        stack_files+=(-c "$here/tls.yaml")
    fi
    # An overlay cannot empty a variable stack.yaml sets, so REDIS_URL is set here.
    STACK_REDIS_URL=redis://redis:6379/0
    if [[ $REDIS_HA == 1 ]]; then
        STACK_REDIS_URL=
        REDIS_HA_DIR="$repo/deploy/redis-ha"
        REDIS_HA_VERSION=$(content_hash "$REDIS_HA_DIR" start.sh)
        export REDIS_HA_DIR REDIS_HA_VERSION
        stack_files+=(-c "$here/redis-ha.yaml")
    fi
    # Empty when the image is not on this machine (a registry's: the digest pins it instead).
    APP_IMAGE_ID=$(docker image inspect --format '{{.Id}}' "$APP_IMAGE" 2>/dev/null) || APP_IMAGE_ID=
    export STACK SERVER REPLICAS HTTP_PORT HTTPS_PORT TLS MONITORING PROMETHEUS_PORT SECRETS_DIR SECRET_KEY_VERSION \
        DATABASE_PASSWORD_VERSION WS_SERVER WS_HOST WS_REPLICAS APP_IMAGE APP_IMAGE_ID STACK_REDIS_URL
}

# --- Waiting ----------------------------------------------------------------------------------------

# One line per service that is not there yet (empty output: the stack has converged). A service
# whose rolling update is under way counts all its tasks running, the old ones included.
pending_services() {
    local name replicas short current desired services
    mapfile -t services < <(docker stack services -q "$STACK")
    ((${#services[@]} > 0)) || return 0
    docker service inspect --format '{{.Spec.Name}} {{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' \
        "${services[@]}" | awk -v prefix="${STACK}_" '
            $2 == "updating" || $2 == "rollback_started" { print substr($1, length(prefix) + 1) ": update " $2 }'
    while read -r name replicas; do
        short=${name#"${STACK}"_}
        if [[ " $ONE_SHOT_SERVICES " == *" $short "* ]]; then
            # The newest task of each slot (global: of each node) must have completed; `service ps`
            # lists it before the older attempts of the same name.
            docker service ps "$name" --format '{{.Name}}|{{.CurrentState}}|{{.Error}}' |
                awk -F '|' -v s="$short" '!seen[$1]++ && $2 !~ /^Complete/ { print s ": " $2 " " $3 }
                    END { if (NR == 0) print s ": no task yet" }'
            continue
        fi
        current=${replicas%%/*}
        desired=${replicas#*/}
        desired=${desired%% *}
        # Running means healthy: Swarm reports a task with a health check as starting until it passes.
        if [[ $current != "$desired" ]]; then
            echo "$short: $replicas running; $(docker service ps "$name" --filter desired-state=running \
                --format '{{.CurrentState}} {{.Error}}' | sed 's/ [0-9a-z ]* ago//' | sort | uniq -c |
                tr -s ' ' | paste -sd ';' -)"
        fi
    done < <(docker stack services "$STACK" --format '{{.Name}} {{.Replicas}}')
}

# When this node runs one of the stack's Nginx tasks: /readyz answers 200 through it (Nginx picks
# up new app addresses within a second of their DNS records). Checked on 127.0.0.1 only.
local_nginx_ready() {
    local port
    [[ -n $(docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_nginx") ]] || return 0
    port=$(docker service inspect "${STACK}_nginx" \
        --format '{{range .Spec.EndpointSpec.Ports}}{{if eq .TargetPort 8080}}{{.PublishedPort}}{{end}}{{end}}')
    curl -fsS -o /dev/null --max-time 3 "http://127.0.0.1:$port/readyz" 2>/dev/null
}

wait_converged() {
    local deadline=$((SECONDS + SWARM_WAIT_TIMEOUT)) pending
    docker stack services "$STACK" --format '{{.Name}}' | grep -q . || die "no stack named $STACK"
    log "waiting for $STACK (at most ${SWARM_WAIT_TIMEOUT}s)"
    while :; do
        pending=$(pending_services)
        if [[ -z $pending ]] && ! local_nginx_ready; then
            pending="nginx: /readyz does not answer 200 yet on this node"
        fi
        [[ -z $pending ]] && break
        if ((SECONDS >= deadline)); then
            printf '%s\n' "$pending" >&2
            docker stack ps "$STACK" --no-trunc --format '{{.Name}} {{.DesiredState}} {{.CurrentState}} {{.Error}}' |
                head -n 40 >&2
            die "$STACK did not converge within ${SWARM_WAIT_TIMEOUT}s"
        fi
        sleep 2
    done
    log "$STACK is up: every service runs its tasks healthy"
}

# --- Commands ---------------------------------------------------------------------------------------

deploy() {
    check_settings
    derive
    check_swarm
    log "deploying $STACK: SERVER=$SERVER REPLICAS=$REPLICAS (ws: $WS_SERVER x $WS_REPLICAS), port $HTTP_PORT" \
        "$([[ $MONITORING == 1 ]] && echo "; Prometheus on port $PROMETHEUS_PORT")"
    docker stack deploy --prune --resolve-image "$SWARM_RESOLVE_IMAGE" --detach=true "${stack_files[@]}" "$STACK"
    wait_converged
}

# Waits until nothing of the stack is left but what `docker stack rm` keeps (volumes).
wait_removed() {
    local deadline=$((SECONDS + SWARM_WAIT_TIMEOUT)) left
    while :; do
        left=$(
            docker ps -aq --filter "label=com.docker.stack.namespace=$STACK"
            docker network ls -q --filter "label=com.docker.stack.namespace=$STACK"
        )
        [[ -z $left ]] && return 0
        ((SECONDS < deadline)) || die "containers or networks of $STACK still there after ${SWARM_WAIT_TIMEOUT}s"
        sleep 1
    done
}

remove() {
    check_settings
    if docker stack services "$STACK" --format '{{.Name}}' 2>/dev/null | grep -q .; then
        docker stack rm "$STACK"
    fi
    wait_removed
    log "$STACK removed (its volumes are kept)"
}

purge() {
    local volumes deadline=$((SECONDS + SWARM_WAIT_TIMEOUT))
    remove
    # A stopped container can hold a volume for a moment after it is gone from `docker ps`.
    while :; do
        mapfile -t volumes < <(docker volume ls -q --filter "label=com.docker.stack.namespace=$STACK")
        [[ ${#volumes[@]} -eq 0 ]] && break
        docker volume rm "${volumes[@]}" >/dev/null 2>&1 && break
        ((SECONDS < deadline)) || die "could not remove the volumes of $STACK: ${volumes[*]}"
        sleep 1
    done
    log "$STACK volumes removed"
}

case ${1:-} in
    deploy) deploy ;;
    config)
        check_settings
        derive
        docker stack config "${stack_files[@]}"
        ;;
    wait)
        check_settings
        wait_converged
        ;;
    rm) remove ;;
    purge) purge ;;
    *) die "usage: stack.sh deploy|config|wait|rm|purge (settings in the environment, see the header)" ;;
esac
