#!/bin/sh
# Granian (Rust HTTP core) in ASGI mode. It has no WebSocket ping or message-size setting: the app
# sends heartbeat frames instead of pings (WS_APP_HEARTBEAT) and enforces WS_MAX_MESSAGE_BYTES
# itself, closing a bigger message with 1009 like the other servers. It ends the connection the moment
# the app closes it, without waiting for the client's close frame: frames of the client still unread
# then turn the end into a reset that loses the close frame, so the app first waits for the client to
# go quiet (WS_QUIET_BEFORE_CLOSE, app/core/consumers.py).
set -eu
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"
export WS_APP_HEARTBEAT="$WS_PING_INTERVAL"
export WS_QUIET_BEFORE_CLOSE=0.25  # seconds of silence: every flooding client of the test under load got its 1008

if [ "$SERVER_ACCESS_LOG" = 1 ]; then access_log=--access-log; else access_log=--no-access-log; fi

# asginl: ASGI without lifespan. The app has none (Uvicorn and gunicorn-asgi run with it off too);
# with it on, each Granian worker logged a lifespan error at every start.
exec granian "$ASGI_APP" \
    --interface asginl \
    --host "$BIND_HOST" --port "$PORT" \
    --workers "$WEB_CONCURRENCY" \
    --loop uvloop --http 1 --ws \
    --workers-kill-timeout "$GRACEFUL_TIMEOUT" \
    --respawn-failed-workers \
    --no-reload \
    "$access_log"
