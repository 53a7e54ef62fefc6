#!/usr/bin/env bash
# Waits until every running container of a compose project is healthy (or has no healthcheck).
# Works the same with docker compose v2 and docker-compose v1 (no `up --wait` in v1).
# usage: wait-healthy.sh PROJECT TIMEOUT_SECONDS
set -euo pipefail
project="${1:?project}"
timeout="${2:-180}"
deadline=$((SECONDS + timeout))
while true; do
    mapfile -t ids < <(docker ps -q --filter "label=com.docker.compose.project=$project")
    pending=()
    for id in "${ids[@]}"; do
        state="$(docker inspect --format '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}' "$id")"
        case "$state" in
            *" healthy" | *" none") ;;
            *" unhealthy")
                echo "unhealthy: ${state% *}" >&2
                docker logs --tail 50 "$id" >&2 || true
                exit 1
                ;;
            *) pending+=("$state") ;;
        esac
    done
    if [ "${#ids[@]}" -gt 0 ] && [ "${#pending[@]}" -eq 0 ]; then
        exit 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "not healthy after ${timeout}s: ${pending[*]:-no containers}" >&2
        exit 1
    fi
    sleep 2
done
