#!/bin/sh
# Hypercorn: uvloop workers, configured through its TOML config file, written here from the shared
# values (Hypercorn sends no WebSocket pings unless websocket_ping_interval is set).
set -eu
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

config="$(mktemp "${TMPDIR:-/tmp}/hypercorn.XXXXXX")"
cat > "$config" <<TOML
bind = ["0.0.0.0:$PORT"]
workers = $WEB_CONCURRENCY
worker_class = "uvloop"
websocket_max_message_size = $WS_MAX_MESSAGE_BYTES
websocket_ping_interval = $WS_PING_INTERVAL
graceful_timeout = $GRACEFUL_TIMEOUT
keep_alive_timeout = $KEEPALIVE_TIMEOUT
include_server_header = false
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(D)sus'
TOML

exec hypercorn --config "$config" "$ASGI_APP"
