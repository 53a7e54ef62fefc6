#!/bin/sh
# Gunicorn's native ASGI worker: HTTP and WebSockets in one server. It has no WebSocket ping
# setting, so the app sends heartbeat frames (WS_APP_HEARTBEAT) to keep idle sockets alive.
# deploy/bin/gunicorn_asgi_conf.py closes open WebSockets with 1012 on SIGTERM (see there why).
set -eu
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
export WS_APP_HEARTBEAT="$WS_PING_INTERVAL"

# Gunicorn writes no access log unless given a file.
if [ "$SERVER_ACCESS_LOG" = 1 ]; then
    set -- --access-logfile - --access-logformat '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
else
    set --
fi

# --no-control-socket: as in gunicorn.sh (no writable home for its control socket).
exec gunicorn "$ASGI_APP" \
    --config "$(dirname "$0")/../bin/gunicorn_asgi_conf.py" \
    --bind "$BIND_HOST:$PORT" --no-control-socket \
    --workers "$WEB_CONCURRENCY" --worker-class asgi \
    --asgi-loop uvloop --asgi-lifespan off \
    --websocket-max-message-size "$WS_MAX_MESSAGE_BYTES" \
    --graceful-timeout "$GRACEFUL_TIMEOUT" --timeout "$WORKER_TIMEOUT" \
    --keep-alive "$KEEPALIVE_TIMEOUT" \
    --forwarded-allow-ips "" \
    "$@"
