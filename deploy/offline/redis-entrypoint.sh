#!/usr/bin/env bash
# docker-entrypoint.sh of local/redis:bookworm, after the official redis image's:
#  - `docker run IMAGE --port 6380` and `docker run IMAGE /path/redis.conf` run redis-server;
#  - started as root, it chowns the working directory (/data) to redis and drops to redis (999);
#  - started as any other user (`user: "999:999"`), it runs as that user;
#  - umask 0077 unless one was set.
# The official image's redis is built with protected mode off by default; Debian's is not, so
# `--protected-mode no` is put before the command-line options when no config file is given
# (options given later, e.g. `--protected-mode yes`, still win).
set -euo pipefail

# first arg is `-f` or `--some-option`, or `something.conf`
if [[ $# -eq 0 || ${1#-} != "$1" || ${1%.conf} != "$1" ]]; then
    set -- redis-server "$@"
fi

if [[ $1 == redis-server && $(id -u) == 0 ]]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [[ $1 == redis-server && ( $# -eq 1 || ${2:0:1} == - ) ]]; then
    set -- redis-server --protected-mode no "${@:2}"
fi

if [[ $(umask) == 0022 ]]; then
    umask 0077
fi

exec "$@"
