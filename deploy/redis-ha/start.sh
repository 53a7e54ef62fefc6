#!/usr/bin/env bash
# Starts one member of the highly available channel layer: a Redis server or a Sentinel
# (compose.redis-ha.yaml, deploy/swarm/redis-ha.yaml; README "Redis with Sentinel").
#
#   start.sh redis [redis-server OPTION...]   a Redis server: the primary, or a replica of it
#   start.sh sentinel                         a Sentinel watching the primary
#   start.sh sentinel-health                  exit 0 when this sentinel sees enough others to
#                                             reach the quorum and authorize a failover
#
# Every member first asks who the primary is now, so that one restarted after a failover joins the
# topology as it is, not as the compose file declared it at the start:
#   1. the sentinels (SENTINEL get-master-addr-by-name), but this one;
#   2. failing those (all of them starting too), the declared primary itself: a replica since a
#      failover names its primary (ROLE);
#   3. failing that, the declared primary (REDIS_HA_PRIMARY).
# A Redis server whose answer is itself starts as the primary, any other as a replica of it.
#
# The members know one another by address, not by name, although Docker gives a restarted container
# a new one: on an internal network, looking up the name of a container that is down takes Docker's
# resolver 2 s, and Redis and Sentinel look names up in their one thread, again and again while a
# member is down. A Sentinel that stalls that way for 2 s stops acting for 30 s (TILT mode), and a
# replica stops answering its sentinels, just when a failover needs them. By address, a member that
# is down costs them nothing. Each member's address is looked up here, once, when it starts; the
# sentinels learn the others' from the primary and from one another. A sentinel restarted with a new
# address is the same one to the others (its id is derived from its name, see start_sentinel).
#
# Settings (environment):
#   REDIS_HA_SELF        this member's DNS name (required)
#   REDIS_HA_PRIMARY     the primary at the start, host name (default redis)
#   REDIS_SENTINELS      the sentinels, host:port,... (as the app's setting)
#   REDIS_SENTINEL_MASTER  the name the sentinels give the primary (default mymaster)
#   SENTINEL_QUORUM, SENTINEL_DOWN_AFTER_MS, SENTINEL_FAILOVER_TIMEOUT_MS   sentinels only (below)
#   SENTINEL_DIR         a folder the sentinel may write, for its configuration file (sentinels only;
#                        compose.redis-ha.yaml and deploy/swarm/redis-ha.yaml set it)
# The Redis servers' own options come from the container's command (compose.yaml's `redis`).
set -euo pipefail

role=${1:?usage: start.sh redis [OPTION...] | start.sh sentinel | start.sh sentinel-health}
shift
self=${REDIS_HA_SELF:?REDIS_HA_SELF: this member\'s host name}
declared_primary=${REDIS_HA_PRIMARY:-redis}
master=${REDIS_SENTINEL_MASTER:-mymaster}
redis_port=6379
sentinel_port=26379

log() { printf 'redis-ha %s: %s\n' "$self" "$*" >&2; }

# Up to two lines (host, port) from redis-cli, or nothing: a member that is down gets 2 s.
ask() { timeout 2 redis-cli -h "$1" -p "$2" --raw "${@:3}" 2>/dev/null | head -n 2 || true; }

# The IPv4 address of a host name (an address stays as it is); nothing when it does not resolve.
address_of() { getent ahostsv4 "$1" | awk 'NR == 1 { print $1 }' || true; }

# The primary's address now (see the top of this file).
current_primary() {
    local entry host port answer
    IFS=, read -ra entries <<<"${REDIS_SENTINELS:-}"
    for entry in "${entries[@]}"; do
        host=${entry%:*} port=${entry##*:}
        [[ $host == "$entry" ]] && port=$sentinel_port
        [[ -n $host && $host != "$self" ]] || continue
        answer=$(ask "$host" "$port" SENTINEL get-master-addr-by-name "$master")
        if [[ $answer == *$'\n'* ]]; then
            address_of "${answer%%$'\n'*}"
            return
        fi
    done
    if [[ $declared_primary != "$self" ]]; then
        answer=$(ask "$declared_primary" "$redis_port" ROLE)
        if [[ $answer == slave$'\n'* ]]; then
            address_of "${answer#*$'\n'}"
            return
        fi
    fi
    address_of "$declared_primary"
}

# This container's own address: by its name, or, where its name resolves only once it is healthy
# (Swarm's DNS lists healthy tasks only), by its host name, which /etc/hosts maps to its address.
own_address() {
    local own
    own=$(address_of "$self")
    [[ -n $own ]] || own=$(address_of "$(hostname)")
    echo "$own"
}

start_redis() {
    local primary own
    primary=$(current_primary)
    own=$(own_address)
    [[ -n $own ]] || { log "cannot find my own address ($self)"; exit 1; }
    # Only the declared primary may start as the primary when nobody answers (the first start): a
    # replica waits for it (exits, and its orchestrator starts it again), never a second primary.
    if [[ -z $primary && $self != "$declared_primary" ]]; then
        log "no primary found: neither the sentinels nor $declared_primary answer"
        exit 1
    fi
    # A full copy goes from memory to memory, at once: nothing of the channel layer's is kept on
    # disk, and a replica that waits for its copy cannot be promoted.
    set -- "$@" --repl-diskless-sync yes --repl-diskless-sync-delay 0 --repl-diskless-load on-empty-db
    if [[ -z $primary || $primary == "$own" ]]; then
        log "starting as the primary ($own)"
    else
        log "starting as a replica of $primary"
        set -- "$@" --replicaof "$primary" "$redis_port"
    fi
    exec docker-entrypoint.sh "$@"
}

start_sentinel() {
    local primary dir=${SENTINEL_DIR:?set SENTINEL_DIR, a folder the sentinel may write}
    local config=$dir/sentinel.conf
    primary=$(current_primary)
    [[ -n $primary ]] || { log "no primary found: neither the sentinels nor $declared_primary answer"; exit 1; }
    log "watching $primary as $master"
    # Sentinel rewrites its configuration file as it learns (replicas, other sentinels, failovers):
    # the file lives in a writable folder of the container (SENTINEL_DIR). Its id is derived from
    # its name, so that a restarted sentinel is the same one to the others, at a new address, not
    # one more they would have to forget (SENTINEL RESET).
    cat >"$config" <<EOF
port $sentinel_port
protected-mode no
dir $dir
sentinel myid $(printf '%s' "$self" | sha1sum | cut -c1-40)
sentinel monitor $master $primary $redis_port ${SENTINEL_QUORUM:-2}
sentinel down-after-milliseconds $master ${SENTINEL_DOWN_AFTER_MS:-2000}
sentinel failover-timeout $master ${SENTINEL_FAILOVER_TIMEOUT_MS:-10000}
sentinel parallel-syncs $master 1
EOF
    exec redis-server "$config" --sentinel
}

case $role in
    redis) start_redis "$@" ;;
    sentinel) start_sentinel ;;
    sentinel-health) redis-cli -p "$sentinel_port" --raw SENTINEL CKQUORUM "$master" | grep -q '^OK' ;;
    *)
        echo "start.sh: unknown role '$role' (redis, sentinel or sentinel-health)" >&2
        exit 2
        ;;
esac
