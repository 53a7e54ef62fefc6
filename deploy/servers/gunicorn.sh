#!/bin/sh
# Gunicorn over WSGI: HTTP only. WSGI cannot carry WebSockets, so in this variant Nginx sends /ws/
# to an ASGI sidecar (see deploy/servers.txt), the split many teams run.
set -eu
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

# Gunicorn's own variables, each with the choice the bench measured fastest (docs/benchmarks.md,
# "The WSGI baseline").
# The worker class. gthread: each process serves its connections from a pool of threads and keeps
# Nginx's upstream connections open between requests (keep-alive). sync, Gunicorn's default, closes
# the connection after every answer, so Nginx opens a new TCP connection for each request. gthread
# served 1.2x to 2.1x sync's /api/ping-sync and 1.2x to 1.9x its /api/db and /api/ping (wrk, two
# runs of three each). sync stays selectable for comparison.
: "${GUNICORN_WORKER_CLASS:=gthread}"
# Threads per process (gthread only). 4, 8 and 16 were level within the runs' spread, 2 slower; 8
# had the lower /api/db p95 (a thread waiting on PostgreSQL leaves the others to serve), and is no
# more than DATABASE_POOL_MAX_SIZE (8), so no thread waits for a pooled connection.
: "${GUNICORN_THREADS:=8}"

# Gunicorn writes no access log unless given a file.
if [ "$SERVER_ACCESS_LOG" = 1 ]; then
    set -- --access-logfile - --access-logformat '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
else
    set --
fi
# Gunicorn turns sync into gthread as soon as it gets more than one thread: sync gets none.
if [ "$GUNICORN_WORKER_CLASS" = gthread ]; then
    set -- --threads "$GUNICORN_THREADS" "$@"
fi

# --keep-alive: idle seconds of an upstream connection (gthread; sync ignores it), longer than Nginx
# keeps one idle, so Nginx always closes it first. KEEPALIVE_TIMEOUT=0 closes after every answer,
# which measured slower than the sync workers.
# --no-control-socket: Gunicorn opens a control socket (for gunicornc) under $HOME by default; the
# image's user has no home it can write to, so it logged an error at every start. Workers are managed
# by signals and the orchestrator here.
exec gunicorn "$WSGI_APP" \
    --bind "$BIND_HOST:$PORT" --no-control-socket \
    --workers "$WEB_CONCURRENCY" --worker-class "$GUNICORN_WORKER_CLASS" \
    --keep-alive "$KEEPALIVE_TIMEOUT" \
    --graceful-timeout "$GRACEFUL_TIMEOUT" --timeout "$WORKER_TIMEOUT" \
    --forwarded-allow-ips "" \
    "$@"
