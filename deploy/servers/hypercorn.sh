#!/bin/sh
# Hypercorn: uvloop, configured through its TOML config file, written here from the shared values
# (Hypercorn sends no WebSocket pings unless websocket_ping_interval is set).
#
# Its processes run under deploy/bin/prefork.py (as Daphne's do), each a single Hypercorn worker
# (workers = 0) on the inherited socket (fd://). Hypercorn's own multi-worker master keeps the
# listening socket open until its last worker has exited, and a stopping worker holds its open
# WebSockets for up to GRACEFUL_TIMEOUT: meanwhile new connections were queued in a backlog nobody
# accepts, and Nginx's requests on them failed with 502 after the drain. prefork.py closes the socket
# at once, so they are refused and Nginx retries them on another replica.
#
# deploy/bin/run_hypercorn.py is Hypercorn's own command line with a WebSocket message buffer that
# stops at websocket_max_message_size (Hypercorn's keeps storing a refused message as it arrives).
set -eu
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

# The shared socket's listen queue. Hypercorn calls listen() again on the socket it inherits, with its
# own backlog (100 by default): in the bench that queue overflowed and refused WebSocket handshakes
# arriving at 200 a second. So both prefork.py and Hypercorn get this one value.
backlog=2048

config="$(mktemp "${TMPDIR:-/tmp}/hypercorn.XXXXXX")"
cat > "$config" <<TOML
workers = 0
backlog = $backlog
worker_class = "uvloop"
websocket_max_message_size = $WS_MAX_MESSAGE_BYTES
websocket_ping_interval = $WS_PING_INTERVAL
graceful_timeout = $GRACEFUL_TIMEOUT
keep_alive_timeout = $KEEPALIVE_TIMEOUT
include_server_header = false
# Nginx sends its own Date and drops the app server's (proxy_pass_header): no point formatting one.
include_date_header = false
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(D)sus'
TOML
if [ "$SERVER_ACCESS_LOG" = 1 ]; then
    echo 'accesslog = "-"' >> "$config"
fi

# The supervisor waits past Hypercorn's graceful timeout (its WebSockets end at that timeout) and
# still ends within the container's 30 s stop grace period.
exec python "$(dirname "$0")/../bin/prefork.py" \
    --bind "$BIND_HOST:$PORT" --backlog "$backlog" --processes "$WEB_CONCURRENCY" --grace "$((GRACEFUL_TIMEOUT + 5))" -- \
    python "$(dirname "$0")/../bin/run_hypercorn.py" --config "$config" --bind 'fd://{fd}' "$ASGI_APP"
