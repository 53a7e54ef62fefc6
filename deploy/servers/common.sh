# shellcheck shell=sh
# Sourced by every start file in this folder: the defaults shared by all servers, defined once.
# Each value can be overridden from the environment (compose passes an empty string when unset,
# which also means "use the default").

# Processes per container: the CPUs this container may use (its cgroup quota, else the CPU count).
cpu_count() {
    if [ -r /sys/fs/cgroup/cpu.max ]; then                       # cgroup v2: "<quota> <period>"
        read -r quota period < /sys/fs/cgroup/cpu.max
    elif [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then        # cgroup v1
        read -r quota < /sys/fs/cgroup/cpu/cpu.cfs_quota_us
        read -r period < /sys/fs/cgroup/cpu/cpu.cfs_period_us
    fi
    if [ -n "${quota:-}" ] && [ "$quota" != max ] && [ "$quota" -gt 0 ] 2>/dev/null; then
        echo $(( (quota + period - 1) / period ))
    else
        nproc
    fi
}

# Every interface: in a container the port is reachable only over the container's networks. On a
# host, 127.0.0.1 keeps the server to loopback, behind a local Nginx.
: "${BIND_HOST:=0.0.0.0}"             # address the server listens on (IPv4)
: "${PORT:=8000}"                     # where the server listens (Nginx's APP_PORT)
: "${WEB_CONCURRENCY:=$(cpu_count)}"  # server processes
: "${WS_MAX_MESSAGE_BYTES:=65536}"    # largest WebSocket message; bigger ones are closed with 1009
: "${WS_PING_INTERVAL:=20}"           # seconds between pings, below Nginx's WS_READ_TIMEOUT (60)
: "${WS_PING_TIMEOUT:=20}"            # a peer that does not answer a ping in time is dropped
: "${GRACEFUL_TIMEOUT:=20}"           # seconds to finish in-flight work on SIGTERM (< stop grace 30 s)
: "${KEEPALIVE_TIMEOUT:=75}"          # idle keep-alive seconds, above Nginx's upstream idle time (60)
# Seconds a worker may give no sign of life before its supervisor kills and replaces it (Gunicorn's
# --timeout, Uvicorn's --timeout-worker-healthcheck). Not Uvicorn's 5 s: a worker holding thousands
# of WebSockets can be that busy with one broadcast to all of them, and its kill drops every one of
# them, whose reconnections load the other workers further (docs/benchmarks.md, the sockets to the
# limit). Gunicorn's own default, 30, for every server that has such a supervisor.
: "${WORKER_TIMEOUT:=30}"
# 1: the server logs every request too. Off by default: Nginx's access log has every request
# already, with its request id and the upstream's status and time, and a second line per request
# from the server cost 14 to 35 % of the HTTP throughput in the bench (docs/benchmarks.md).
: "${SERVER_ACCESS_LOG:=0}"
export PORT WEB_CONCURRENCY WS_MAX_MESSAGE_BYTES WS_PING_INTERVAL WS_PING_TIMEOUT GRACEFUL_TIMEOUT KEEPALIVE_TIMEOUT
export WORKER_TIMEOUT
export SERVER_ACCESS_LOG

# shellcheck disable=SC2034  # used by the start files that source this one
ASGI_APP=config.asgi:application
# shellcheck disable=SC2034
WSGI_APP=config.wsgi:application
# Proxy trust is the app's job (TRUSTED_PROXIES, one rule for every server): the servers' own
# X-Forwarded-* handling stays off so no server rewrites the client address a second way.

# Metrics (app/core/metrics.py): every server process counts into files of PROMETHEUS_MULTIPROC_DIR
# (prometheus-client's multiprocess mode), and one exporter per container, started here, serves
# their sum as /metrics on METRICS_PORT (core/metrics_exporter.py tells why one exporter). It runs
# beside the server, a child of it once the start file execs, and stops with it. The folder is on
# the container's tmpfs and emptied first: the files of a previous run would count twice.
# METRICS=0: no exporter, and the app counts in each process's memory only (no file writes).
: "${METRICS:=1}"
: "${METRICS_PORT:=9100}"
: "${PROMETHEUS_MULTIPROC_DIR:=/tmp/prometheus}"
# A folder that cannot be written costs the metrics, never the server.
if [ "$METRICS" = 1 ] && mkdir -p "$PROMETHEUS_MULTIPROC_DIR" \
    && find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -type f -name '*.db' -delete \
    && [ -w "$PROMETHEUS_MULTIPROC_DIR" ]; then
    export PROMETHEUS_MULTIPROC_DIR
    python -m core.metrics_exporter --bind "$BIND_HOST" --port "$METRICS_PORT" &
else
    [ "$METRICS" != 1 ] || echo "metrics: $PROMETHEUS_MULTIPROC_DIR cannot be written; no /metrics" >&2
    unset PROMETHEUS_MULTIPROC_DIR
fi
