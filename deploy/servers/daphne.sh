#!/bin/sh
# Daphne has no workers option: deploy/bin/prefork.py binds the port once and runs
# WEB_CONCURRENCY Daphne processes that all accept on that one socket (Daphne's --fd pattern),
# so the kernel balances connections and Nginx sees a single upstream address per container.
# deploy/bin/run_daphne.py is Daphne's own command line with its close codes corrected (1008,
# 1009, 1013 reach the client, as with every other server).
set -eu
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

# Daphne logs requests to stdout unless its verbosity is 0; Django's LOGGING still sets the level
# of every logger, Daphne's included.
if [ "$SERVER_ACCESS_LOG" = 1 ]; then set -- --access-log -; else set -- --verbosity 0; fi

exec python "$(dirname "$0")/../bin/prefork.py" \
    --bind "$BIND_HOST:$PORT" --processes "$WEB_CONCURRENCY" --grace "$GRACEFUL_TIMEOUT" -- \
    python "$(dirname "$0")/../bin/run_daphne.py" --fd '{fd}' \
    --websocket-max-message-size "$WS_MAX_MESSAGE_BYTES" \
    --websocket-max-frame-size "$WS_MAX_MESSAGE_BYTES" \
    --ping-interval "$WS_PING_INTERVAL" --ping-timeout "$WS_PING_TIMEOUT" \
    --websocket_timeout -1 \
    --application-close-timeout "$GRACEFUL_TIMEOUT" \
    --no-server-name \
    "$@" \
    "$ASGI_APP"
