#!/bin/sh
# deploy/servers.txt, the registry of server variants, read in one place for Make and the shell
# scripts (the Makefile, deploy/entrypoint.sh, deploy/swarm/stack.sh, nginx/entrypoint.sh);
# stackctl/registry.py is its reader for Python, and tests/stackctl checks that the two agree.
#
#   registry.sh names [FILE]             every variant, one per line, in the file's order
#   registry.sh websockets NAME [FILE]   the variant that serves NAME's WebSockets (itself, or a
#                                        sidecar's variant); nothing for an unknown NAME
#
# FILE defaults to servers.txt beside this script. POSIX sh and awk only: it also runs in the app
# image and in the Nginx container.
set -eu

default_file="$(dirname "$0")/servers.txt"

case "${1:-}" in
names)
    awk '!/^#/ && NF { print $1 }' "${2:-$default_file}"
    ;;
websockets)
    [ "$#" -ge 2 ] || { echo "usage: $0 websockets NAME [FILE]" >&2; exit 64; }
    awk -v name="$2" '!/^#/ && $1 == name { print $2 }' "${3:-$default_file}"
    ;;
*)
    echo "usage: $0 names [FILE] | websockets NAME [FILE]" >&2
    exit 64
    ;;
esac
