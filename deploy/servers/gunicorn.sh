#!/bin/sh
# Gunicorn with sync WSGI workers: HTTP only. WSGI cannot carry WebSockets, so in this variant
# Nginx sends /ws/ to an ASGI sidecar (see deploy/servers.txt), the split many teams run.
set -eu
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

# Gunicorn writes no access log unless given a file.
if [ "$SERVER_ACCESS_LOG" = 1 ]; then
    set -- --access-logfile - --access-logformat '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
else
    set --
fi

exec gunicorn "$WSGI_APP" \
    --bind "$BIND_HOST:$PORT" \
    --workers "$WEB_CONCURRENCY" --worker-class sync \
    --graceful-timeout "$GRACEFUL_TIMEOUT" --timeout 30 \
    --forwarded-allow-ips "" \
    "$@"
