#!/bin/sh
# Uvicorn: uvloop + httptools, one process per CPU. No Server or Date header: Nginx sends its own
# and drops the app server's.
set -eu
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

# Uvicorn's own variables, each with the choice the bench measured fastest (docs/benchmarks.md).
# The event loop and the HTTP parser: uvloop and httptools (C) over asyncio's loop and h11.
: "${UVICORN_LOOP:=uvloop}"
: "${UVICORN_HTTP:=httptools}"
# The WebSocket implementation: wsproto writes each frame straight to the socket and keeps its pings
# on timers, where the websockets library awaits a drain per frame and runs tasks per connection.
# Chat fan-out latency and memory per idle socket were lowest with wsproto; the websockets library
# parses client frames faster.
: "${UVICORN_WS:=wsproto}"

# deploy/bin/run_uvicorn.py is Uvicorn's own command line with its wsproto protocol refusing a message
# over --ws-max-size by a close handshake, so the 1009 reaches the client (Uvicorn resets the
# connection as it sends it). Its workers load the same script, so they run the same protocol.

if [ "$SERVER_ACCESS_LOG" = 1 ]; then access_log=--access-log; else access_log=--no-access-log; fi

exec python "$(dirname "$0")/../bin/run_uvicorn.py" "$ASGI_APP" \
    --host "$BIND_HOST" --port "$PORT" \
    --workers "$WEB_CONCURRENCY" \
    --loop "$UVICORN_LOOP" --http "$UVICORN_HTTP" --ws "$UVICORN_WS" \
    --ws-max-size "$WS_MAX_MESSAGE_BYTES" \
    --ws-ping-interval "$WS_PING_INTERVAL" --ws-ping-timeout "$WS_PING_TIMEOUT" \
    --ws-per-message-deflate false \
    --timeout-graceful-shutdown "$GRACEFUL_TIMEOUT" \
    --timeout-worker-healthcheck "$WORKER_TIMEOUT" \
    --timeout-keep-alive "$KEEPALIVE_TIMEOUT" \
    --no-proxy-headers \
    --no-server-header \
    --no-date-header \
    --lifespan off \
    "$access_log"
