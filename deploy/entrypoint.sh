#!/bin/sh
# The image's entry point.
#   no arguments    start the server named by SERVER (its start file in deploy/servers/)
#   release         one-shot release tasks: migrate the database, publish static files
#   anything else   run it as a command (e.g. python manage.py shell)
# `exec` everywhere: the server replaces this shell and receives SIGTERM directly.
set -eu
here="$(dirname "$0")"

valid_servers() {
    sh "$here/registry.sh" names
}

if [ "$#" -eq 0 ]; then
    server="${SERVER:-}"
    if [ -z "$server" ] || ! valid_servers | grep -qxF -- "$server"; then
        echo "SERVER must be one of: $(valid_servers | tr '\n' ' ')(got '${server}')" >&2
        exit 64
    fi
    exec "$here/servers/$server.sh"
fi

if [ "$1" = release ]; then
    python manage.py migrate --noinput
    # Nginx serves /static/ from a shared volume: refresh it from this image's collected files.
    if [ -n "${STATIC_PUBLISH_DIR:-}" ]; then
        find "$STATIC_PUBLISH_DIR" -mindepth 1 -delete
        cp -R "$STATIC_ROOT/." "$STATIC_PUBLISH_DIR/"
        echo "static files published to $STATIC_PUBLISH_DIR"
    fi
    exit 0
fi

exec "$@"
