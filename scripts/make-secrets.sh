#!/usr/bin/env bash
# Creates the stack's local secrets once, as random values: DIR/django_secret_key, DIR/postgres_password.
# The folder is private to the user; the files are world-readable inside it because the
# containers read them under their own unprivileged uids.
set -euo pipefail
dir="${1:?usage: make-secrets.sh DIR}"
mkdir -p "$dir"
chmod 700 "$dir"
for name in django_secret_key postgres_password; do
    if [ ! -s "$dir/$name" ]; then
        # 48 random bytes as URL-safe base64 (64 characters), with coreutils alone: on a new
        # machine this runs before any Python is installed.
        { head -c 48 /dev/urandom | base64 -w 0 | tr '+/' '-_'; echo; } > "$dir/$name"
        chmod 644 "$dir/$name"
        echo "created $dir/$name"
    fi
done
