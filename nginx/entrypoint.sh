#!/bin/sh
# Nginx for the stack: renders the config from the templates next to this file, runs nginx and keeps
# its upstream servers in step with the app's DNS records.
#
#   sh entrypoint.sh [run]           render, start nginx, watch the upstreams (the container's command)
#   sh entrypoint.sh render          render once into $NGINX_TMP_DIR/conf and exit (tests, debugging)
#   sh entrypoint.sh servers PORT [ADDRESS...]   print the upstream `server` lines for these addresses
#   sh entrypoint.sh healthcheck     exit 0 when nginx runs and answers (the compose health check)
#
# Why the watcher: nginx < 1.27.3 resolves the names in `upstream { server ...; }` once, when the
# config is (re)loaded. A recreated or scaled app container gets a new IP, so after
# `docker compose up --force-recreate app` (or `--scale app=3`) nginx would keep sending requests to
# addresses that are gone: 502s until someone reloads it. So this script starts nginx, then every
# UPSTREAM_WATCH_INTERVAL seconds asks Docker's DNS for the A records of APP_HOST and WS_HOST, and
# when the set of addresses changes it rewrites upstreams.conf and reloads nginx (SIGHUP, the same as
# `nginx -s reload`: graceful, open connections and WebSockets finish on the old workers). A new
# container is in the set within one interval of getting its DNS record, which happens before it can
# pass its health check. The same code path runs on nginx 1.28 (the `resolve` server parameter of
# 1.27.3+ is not used, so one config works on 1.22 and 1.28).
set -eu

# The /ws/ upstream for a variant: the sidecar when the registry says another variant serves that
# one's WebSockets (gunicorn), else the app itself. So a compose file or an environment that names
# only SERVER routes WebSockets right, with or without the Makefile.
ws_host_for() {
    ws_server=
    if [ -n "$1" ] && [ -r "$SERVERS_FILE" ] && [ -r "$SERVERS_REGISTRY" ]; then
        ws_server=$(sh "$SERVERS_REGISTRY" websockets "$1" "$SERVERS_FILE")
    fi
    if [ -n "$ws_server" ] && [ "$ws_server" != "$1" ]; then echo "$SIDECAR_HOST"; else echo "$APP_HOST"; fi
}

# --- Settings: every default is defined here and nowhere else -------------------------------------

: "${APP_HOST:=app}"                    # app containers (one A record per replica)
: "${SERVER:=}"                         # the app's variant, to pick the WebSocket upstream below
: "${SERVERS_FILE:=/etc/nginx/servers.txt}"  # deploy/servers.txt: which variant carries each one's WebSockets
: "${SERVERS_REGISTRY:=/etc/nginx/registry.sh}"  # deploy/registry.sh, its reader
: "${SIDECAR_HOST:=ws}"                 # the WebSocket sidecar, for a variant that cannot carry them
: "${WS_HOST:=$(ws_host_for "$SERVER")}"  # WebSocket upstream; unset = from SERVER and SERVERS_FILE
: "${APP_PORT:=8000}"                   # port of both APP_HOST and WS_HOST
: "${REQUEST_BODY_MAX_BYTES:=1048576}"  # client_max_body_size; Django enforces the same value
: "${WS_READ_TIMEOUT:=60}"              # seconds; must stay above the servers' WS_PING_INTERVAL
: "${NGINX_SHUTDOWN_TIMEOUT:=20}"       # worker_shutdown_timeout, below the 30 s stop grace period
: "${API_RATE:=50r/s}"                  # limit_req on /api/, per client address
: "${API_BURST:=100}"
: "${WS_HANDSHAKE_RATE:=10r/s}"         # limit_req on /ws/ handshakes, per client address
: "${WS_HANDSHAKE_BURST:=20}"
: "${WS_CONN_PER_IP:=100}"              # limit_conn: open WebSockets per client address
: "${NGINX_RESOLVER:=127.0.0.11}"       # Docker's embedded DNS (nginx `resolver`)
: "${TLS:=0}"                           # 1: HTTPS on NGINX_HTTPS_PORT, plain HTTP redirects
: "${TLS_CERT_FILE:=}"                  # PEM chain and key, required when TLS=1
: "${TLS_KEY_FILE:=}"
: "${HTTPS_PUBLIC_PORT:=443}"           # port the https redirect points at (the published one)
: "${NGINX_HTTP_PORT:=8080}"            # listen ports inside the container
: "${NGINX_HTTPS_PORT:=8443}"
: "${NGINX_STATUS_PORT:=8081}"          # stub_status for the metrics exporter; never published
: "${NGINX_STATIC_ROOT:=/srv/static}"   # collected static files, served at /static/
: "${NGINX_TMP_DIR:=/tmp/nginx}"        # rendered config, pid, temp files (the root fs is read-only)
: "${UPSTREAM_WATCH_INTERVAL:=1}"       # seconds between DNS checks
: "${NGINX_WORKER_PROCESSES:=auto}"     # auto = one per CPU the host shows; set a number under tight limits
: "${NGINX_WORKER_CONNECTIONS:=16384}"  # per worker, client and app sides both: a WebSocket takes two
TEMPLATE_DIR=$(cd "$(dirname "$0")" && pwd)
NGINX_STATIC_ROOT=${NGINX_STATIC_ROOT%/}
NGINX_CONF_DIR=$NGINX_TMP_DIR/conf

export APP_HOST WS_HOST APP_PORT REQUEST_BODY_MAX_BYTES WS_READ_TIMEOUT NGINX_SHUTDOWN_TIMEOUT \
    API_RATE API_BURST WS_HANDSHAKE_RATE WS_HANDSHAKE_BURST WS_CONN_PER_IP NGINX_RESOLVER \
    TLS_CERT_FILE TLS_KEY_FILE NGINX_HTTP_PORT NGINX_HTTPS_PORT NGINX_STATUS_PORT NGINX_STATIC_ROOT \
    NGINX_TMP_DIR NGINX_WORKER_PROCESSES NGINX_WORKER_CONNECTIONS

# Only these are replaced in the templates; nginx's own $variables are left alone.
# shellcheck disable=SC2016
TEMPLATE_VARS='${REQUEST_BODY_MAX_BYTES} ${WS_READ_TIMEOUT} ${NGINX_SHUTDOWN_TIMEOUT} ${API_RATE}
${API_BURST} ${WS_HANDSHAKE_RATE} ${WS_HANDSHAKE_BURST} ${WS_CONN_PER_IP} ${NGINX_RESOLVER}
${TLS_CERT_FILE} ${TLS_KEY_FILE} ${NGINX_HTTP_PORT} ${NGINX_HTTPS_PORT} ${NGINX_STATUS_PORT} ${NGINX_STATIC_ROOT}
${NGINX_TMP_DIR} ${NGINX_WORKER_PROCESSES} ${NGINX_WORKER_CONNECTIONS} ${NGINX_WORKER_FILES} ${HTTPS_REDIRECT_PORT} ${TLS_LISTEN_HTTP2} ${TLS_HTTP2}'
# shellcheck disable=SC2016
UPSTREAM_VARS='${APP_SERVERS} ${WS_SERVERS}'

log() {
    printf 'entrypoint: %s\n' "$*" >&2
}

fail() {
    log "error: $*"
    exit 64
}

# --- Checks: a bad value fails here with its name, not later as a puzzling nginx error -------------

is_uint() {
    case $1 in '' | *[!0-9]*) return 1 ;; esac
}

check_settings() {
    value=
    for name in APP_PORT REQUEST_BODY_MAX_BYTES WS_READ_TIMEOUT NGINX_SHUTDOWN_TIMEOUT API_BURST \
        WS_HANDSHAKE_BURST WS_CONN_PER_IP HTTPS_PUBLIC_PORT NGINX_HTTP_PORT NGINX_HTTPS_PORT NGINX_STATUS_PORT \
        UPSTREAM_WATCH_INTERVAL NGINX_WORKER_CONNECTIONS; do
        eval "value=\$$name"
        is_uint "$value" || fail "$name must be a whole number, got '$value'"
    done
    for name in API_RATE WS_HANDSHAKE_RATE; do
        eval "value=\$$name"
        case $value in
            *r/s | *r/m) is_uint "${value%r/?}" || fail "$name must look like 50r/s or 600r/m, got '$value'" ;;
            *) fail "$name must look like 50r/s or 600r/m, got '$value'" ;;
        esac
    done
    # Values pasted into the config must not be able to end a directive or open a block.
    for name in APP_HOST WS_HOST NGINX_RESOLVER TLS_CERT_FILE TLS_KEY_FILE NGINX_STATIC_ROOT NGINX_TMP_DIR; do
        eval "value=\$$name"
        case $value in *[\;\{\}\"\'\$\\]*) fail "$name contains a character nginx would misread: '$value'" ;; esac
    done
    [ "$UPSTREAM_WATCH_INTERVAL" -gt 0 ] || fail "UPSTREAM_WATCH_INTERVAL must be at least 1"
    # limit_conn's own range
    if [ "$WS_CONN_PER_IP" -lt 1 ] || [ "$WS_CONN_PER_IP" -gt 65535 ]; then
        fail "WS_CONN_PER_IP must be between 1 and 65535, got '$WS_CONN_PER_IP'"
    fi
    # The status port must never be one the site is published on.
    if [ "$NGINX_STATUS_PORT" = "$NGINX_HTTP_PORT" ] || { [ "$TLS" = 1 ] && [ "$NGINX_STATUS_PORT" = "$NGINX_HTTPS_PORT" ]; }; then
        fail "NGINX_STATUS_PORT ($NGINX_STATUS_PORT) must differ from the site's ports"
    fi
    if [ "$NGINX_WORKER_PROCESSES" != auto ] && ! is_uint "$NGINX_WORKER_PROCESSES"; then
        fail "NGINX_WORKER_PROCESSES must be auto or a number, got '$NGINX_WORKER_PROCESSES'"
    fi
    check_worker_files
    # The servers ping every WS_PING_INTERVAL seconds; an idle socket must see traffic before nginx's
    # read timeout closes it. Checked when the compose file passes the value on to this container.
    if [ -n "${WS_PING_INTERVAL:-}" ] &&
        ! awk -v p="$WS_PING_INTERVAL" -v t="$WS_READ_TIMEOUT" 'BEGIN { exit !(p + 0 < t + 0) }'; then
        fail "WS_PING_INTERVAL ($WS_PING_INTERVAL) must be below WS_READ_TIMEOUT ($WS_READ_TIMEOUT)"
    fi
    case $TLS in
        0 | '') ;;
        1)
            if [ -z "$TLS_CERT_FILE" ] || [ -z "$TLS_KEY_FILE" ]; then
                fail "TLS=1 needs TLS_CERT_FILE and TLS_KEY_FILE"
            fi
            [ -r "$TLS_CERT_FILE" ] || fail "TLS_CERT_FILE $TLS_CERT_FILE is not readable"
            [ -r "$TLS_KEY_FILE" ] || fail "TLS_KEY_FILE $TLS_KEY_FILE is not readable"
            ;;
        *) fail "TLS must be 0 or 1, got '$TLS'" ;;
    esac
}

# Every connection of a worker is an open file, and a worker also holds its logs, listening sockets
# and config files: worker_rlimit_nofile is worker_connections plus this reserve.
FILES_RESERVE=512

# A non-root nginx cannot raise its open-files hard limit, and above it nginx would only log an alert
# and run with fewer connections than configured: refuse to start instead, with the numbers.
check_worker_files() {
    [ "$NGINX_WORKER_CONNECTIONS" -ge 512 ] || fail "NGINX_WORKER_CONNECTIONS must be at least 512, got '$NGINX_WORKER_CONNECTIONS'"
    NGINX_WORKER_FILES=$((NGINX_WORKER_CONNECTIONS + FILES_RESERVE))
    export NGINX_WORKER_FILES
    # POSIX sh has no `ulimit -H`; Linux shows the hard limit in /proc.
    hard=$(awk '/^Max open files/ { print $5 }' /proc/self/limits)
    if [ "$hard" != unlimited ] && [ "$NGINX_WORKER_FILES" -gt "$hard" ]; then
        fail "NGINX_WORKER_CONNECTIONS=$NGINX_WORKER_CONNECTIONS needs $NGINX_WORKER_FILES open files per worker," \
            "over this container's hard limit of $hard: lower it, or raise the container's nofile ulimit" \
            "(more workers, NGINX_WORKER_PROCESSES, hold more connections within the same limit)"
    fi
}

# --- Upstreams ------------------------------------------------------------------------------------

# The IPv4 addresses NAME resolves to, sorted, on one line; empty when it does not resolve.
addresses() {
    { getent ahostsv4 "$1" 2>/dev/null || :; } |
        awk '{ print $1 }' | sort -u -t . -k 1,1n -k 2,2n -k 3,3n -k 4,4n | tr '\n' ' ' | sed 's/ $//'
}

# The `server` lines of one upstream block: one per address. No address (the containers are not up
# yet): a single server marked `down`, so nginx starts and answers 502 at once without trying to
# connect anywhere.
upstream_servers() {
    port=$1
    shift
    if [ "$#" -eq 0 ]; then
        printf '    server 127.0.0.1:9 down;  # placeholder: the name does not resolve (yet)\n'
        return 0
    fi
    for address in "$@"; do
        printf '    server %s:%s max_fails=1 fail_timeout=5s;\n' "$address" "$port"
    done
}

# Writes upstreams.conf for the addresses in $app_addrs and $ws_addrs (atomically: nginx may be
# reading the directory at the same moment).
write_upstreams() {
    # shellcheck disable=SC2086  # one argument per address
    APP_SERVERS=$(upstream_servers "$APP_PORT" $app_addrs)
    # shellcheck disable=SC2086
    WS_SERVERS=$(upstream_servers "$APP_PORT" $ws_addrs)
    export APP_SERVERS WS_SERVERS
    envsubst "$UPSTREAM_VARS" <"$TEMPLATE_DIR/upstreams.conf.template" >"$NGINX_CONF_DIR/upstreams.conf.tmp"
    mv -f "$NGINX_CONF_DIR/upstreams.conf.tmp" "$NGINX_CONF_DIR/upstreams.conf"
}

# A fingerprint of the certificate and key, so a renewed certificate is picked up by a reload.
tls_fingerprint() {
    if [ "$TLS" = 1 ]; then
        cat "$TLS_CERT_FILE" "$TLS_KEY_FILE" 2>/dev/null | cksum || :
    fi
}

# --- Rendering ------------------------------------------------------------------------------------
# The official image (and its stand-in, deploy/offline) can render /etc/nginx/templates/*.template
# with envsubst once, at start. This script renders on its own because what it writes depends on
# more than the environment: the settings are checked first (a bad value stops the container with
# its name), HTTP/2 is switched on with the directive the installed nginx knows (`http2 on;` from
# 1.25.1, `listen ... http2` on the stand-in's 1.22), and upstreams.conf is rendered again whenever
# the app's addresses change (the watcher below), not only at start.

nginx_at_least() {  # MAJOR MINOR PATCH: is the installed nginx at least this version?
    nginx -v 2>&1 | sed -n 's|.*nginx/\([0-9.]*\).*|\1|p' |
        awk -F . -v a="$1" -v b="$2" -v c="$3" '{ exit !($1 > a || ($1 == a && ($2 > b || ($2 == b && $3 >= c)))) }'
}

render_template() {  # NAME.template -> NAME in the rendered config directory
    envsubst "$TEMPLATE_VARS" <"$TEMPLATE_DIR/$1.template" >"$NGINX_CONF_DIR/$1.tmp"
    mv -f "$NGINX_CONF_DIR/$1.tmp" "$NGINX_CONF_DIR/$1"
}

render() {
    mkdir -p "$NGINX_CONF_DIR" "$NGINX_TMP_DIR/client_body" "$NGINX_TMP_DIR/proxy" \
        "$NGINX_TMP_DIR/fastcgi" "$NGINX_TMP_DIR/uwsgi" "$NGINX_TMP_DIR/scgi"
    # The https redirect names the port only when it is not 443.
    HTTPS_REDIRECT_PORT=
    [ "$HTTPS_PUBLIC_PORT" = 443 ] || HTTPS_REDIRECT_PORT=:$HTTPS_PUBLIC_PORT
    # HTTP/2: `http2 on;` since 1.25.1; before that a parameter of `listen` (deprecated since).
    TLS_LISTEN_HTTP2=' http2'
    TLS_HTTP2=
    if [ "$TLS" = 1 ] && nginx_at_least 1 25 1; then
        TLS_LISTEN_HTTP2=
        TLS_HTTP2='http2 on;'
    fi
    export HTTPS_REDIRECT_PORT TLS_LISTEN_HTTP2 TLS_HTTP2

    cp "$TEMPLATE_DIR"/*.conf "$TEMPLATE_DIR/ffdhe2048.pem" "$NGINX_CONF_DIR/"
    render_template nginx.conf
    render_template locations.conf
    render_template server-status.conf
    if [ "$TLS" = 1 ]; then
        render_template server-tls.conf
        mv -f "$NGINX_CONF_DIR/server-tls.conf" "$NGINX_CONF_DIR/server.conf"
    else
        render_template server-http.conf
        mv -f "$NGINX_CONF_DIR/server-http.conf" "$NGINX_CONF_DIR/server.conf"
    fi
    app_addrs=$(addresses "$APP_HOST")
    ws_addrs=$(addresses "$WS_HOST")
    write_upstreams
}

# --- Running --------------------------------------------------------------------------------------

# Runs in a background subshell: checks DNS (and the certificate) every interval and reloads nginx
# when something changed. An empty answer replaces known addresses only when it comes twice in a
# row, so one DNS hiccup does not take the site down.
watch_upstreams() {
    misses=0
    cert=$(tls_fingerprint)
    sleeper=
    trap 'kill "$sleeper" 2>/dev/null; wait "$sleeper" 2>/dev/null; exit 0' TERM
    log "upstream app ($APP_HOST): ${app_addrs:-no address}; ws ($WS_HOST): ${ws_addrs:-no address}"
    if [ "$WS_HOST" = "$SIDECAR_HOST" ] && [ -z "$ws_addrs" ]; then
        log "SERVER=$SERVER carries no WebSockets: /ws/ goes to the '$SIDECAR_HOST' sidecar, which is not" \
            "running yet; start it with the sidecar profile (docker compose --profile sidecar up, or" \
            "COMPOSE_PROFILES=sidecar in .env)"
    fi
    while :; do
        sleep "$UPSTREAM_WATCH_INTERVAL" &
        sleeper=$!
        wait "$sleeper" || :
        new_app=$(addresses "$APP_HOST")
        new_ws=$(addresses "$WS_HOST")
        new_cert=$(tls_fingerprint)
        if { [ -z "$new_app" ] && [ -n "$app_addrs" ]; } || { [ -z "$new_ws" ] && [ -n "$ws_addrs" ]; }; then
            misses=$((misses + 1))
            [ "$misses" -ge 2 ] || continue
        fi
        misses=0
        if [ "$new_app|$new_ws" != "$app_addrs|$ws_addrs" ]; then
            app_addrs=$new_app
            ws_addrs=$new_ws
            write_upstreams || { log "could not write upstreams.conf"; continue; }
            log "upstream app ($APP_HOST): ${app_addrs:-no address}; ws ($WS_HOST): ${ws_addrs:-no address}; reloading"
        elif [ "$new_cert" != "$cert" ] && [ -n "$new_cert" ]; then
            log "TLS certificate changed; reloading"
        else
            continue
        fi
        cert=$new_cert
        kill -HUP "$nginx_pid" 2>/dev/null || log "reload failed: nginx is not running"
    done
}

stopping=
on_signal() {
    if [ -z "$stopping" ]; then
        stopping=1
        # QUIT is nginx's graceful shutdown: no new connections, requests in flight and WebSockets
        # get up to worker_shutdown_timeout.
        log "$1: graceful shutdown (at most ${NGINX_SHUTDOWN_TIMEOUT}s)"
        kill -QUIT "$nginx_pid" 2>/dev/null || :
        kill "$watcher_pid" 2>/dev/null || :
    else
        log "$1 again: fast shutdown"
        kill -TERM "$nginx_pid" 2>/dev/null || :
    fi
}

run() {
    trap 'log "stopped before nginx started"; exit 0' TERM INT QUIT
    check_settings
    render
    nginx -e stderr -p "$NGINX_TMP_DIR/" -c "$NGINX_CONF_DIR/nginx.conf" -g 'daemon off;' &
    nginx_pid=$!
    watch_upstreams &
    watcher_pid=$!
    trap 'on_signal TERM' TERM
    trap 'on_signal INT' INT
    trap 'on_signal QUIT' QUIT
    # `wait` returns early (status > 128) when a trapped signal arrives; nginx is then still there.
    while :; do
        if wait "$nginx_pid"; then status=0; else status=$?; fi
        kill -0 "$nginx_pid" 2>/dev/null || break
    done
    kill "$watcher_pid" 2>/dev/null || :
    wait "$watcher_pid" || :
    log "nginx exited with status $status"
    exit "$status"
}

# nginx is running and answers its own health location (curl in the official image, else wget;
# with neither, a running master process has to do).
healthcheck() {
    pid=$(cat "$NGINX_TMP_DIR/nginx.pid" 2>/dev/null) || { log "unhealthy: no pid file"; exit 1; }
    kill -0 "$pid" 2>/dev/null || { log "unhealthy: nginx (pid $pid) is not running"; exit 1; }
    url=http://127.0.0.1:$NGINX_HTTP_PORT/nginx-health
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -o /dev/null --max-time 2 "$url" || { log "unhealthy: $url"; exit 1; }
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O /dev/null -T 2 "$url" || { log "unhealthy: $url"; exit 1; }
    fi
}

case ${1:-run} in
    run) run ;;
    render)
        check_settings
        render
        log "rendered into $NGINX_CONF_DIR"
        ;;
    servers)
        [ "$#" -ge 2 ] || fail "usage: entrypoint.sh servers PORT [ADDRESS...]"
        shift
        upstream_servers "$@"
        ;;
    healthcheck) healthcheck ;;
    *) fail "unknown command '$1' (run, render, servers, healthcheck)" ;;
esac
