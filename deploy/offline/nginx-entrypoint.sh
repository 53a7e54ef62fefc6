#!/usr/bin/env bash
# /docker-entrypoint.sh of local/nginx:bookworm, after the official nginx image's: when the
# command is nginx, run the /docker-entrypoint.d/ hooks in version order (executable *.sh are
# run, *.envsh are sourced), then exec the command. The only hook shipped is
# 20-envsubst-on-templates.sh (/etc/nginx/templates/*.template -> /etc/nginx/conf.d/).
set -euo pipefail

entrypoint_log() {
    if [[ -z ${NGINX_ENTRYPOINT_QUIET_LOGS:-} ]]; then
        printf '%s\n' "$*"
    fi
}

if [[ ${1:-} == nginx || ${1:-} == nginx-debug ]]; then
    hooks=()
    if [[ -d /docker-entrypoint.d ]]; then
        mapfile -t hooks < <(find /docker-entrypoint.d/ -follow -type f -print | sort -V)
    fi
    if ((${#hooks[@]})); then
        entrypoint_log "$0: /docker-entrypoint.d/ is not empty, will attempt to perform configuration"
        for f in "${hooks[@]}"; do
            case $f in
                *.envsh)
                    if [[ -x $f ]]; then
                        entrypoint_log "$0: Sourcing $f"
                        # shellcheck disable=SC1090
                        . "$f"
                    else
                        entrypoint_log "$0: Ignoring $f, not executable"
                    fi
                    ;;
                *.sh)
                    if [[ -x $f ]]; then
                        entrypoint_log "$0: Launching $f"
                        "$f"
                    else
                        entrypoint_log "$0: Ignoring $f, not executable"
                    fi
                    ;;
                *) entrypoint_log "$0: Ignoring $f" ;;
            esac
        done
        entrypoint_log "$0: Configuration complete; ready for start up"
    else
        entrypoint_log "$0: No files found in /docker-entrypoint.d/, skipping configuration"
    fi
fi

exec "$@"
