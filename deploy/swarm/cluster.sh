#!/usr/bin/env bash
# A Docker Swarm of several nodes on this one machine, for trying the stack across nodes (and for
# `make test-cluster`): each node is its own dockerd in a network namespace of its own, with its own
# data root, exec root, socket, containerd, hostname and /etc/resolv.conf. Needs root, iproute2,
# util-linux (nsenter, unshare) and the Docker engine's binaries; no privileged container.
#
#   cluster.sh up                  namespaces, the hub bridge, the engines, the swarm and node labels
#   cluster.sh load-images [IMG..] every image the stack needs, into every node (docker save | load)
#   cluster.sh deploy              deploy/swarm/stack.sh deploy on the manager, spread over the nodes
#   cluster.sh kill-node N         node N dies at once: every process of it killed, its link down
#   cluster.sh restart-node N      node N boots again (link up, engine started) and rejoins
#   cluster.sh down                everything above gone again: processes, namespaces, cgroups, data
#   cluster.sh status              the nodes' engines and the swarm's view of them
#   cluster.sh docker N ARGS..     the docker CLI against node N's engine
#   cluster.sh exec N CMD..        a command in node N's network namespace (curl 127.0.0.1:PORT ...)
#   cluster.sh url N PORT          http://<node N's address>:PORT, reachable from this machine
#
# Nodes: node1 is the manager and the edge (Nginx and the static files, label edge=true); node2
# holds the data stores (PostgreSQL and Redis, label db=true); every node has a zone label of its
# own (zone=node<N>), over which the app's tasks are spread. Any node beyond the third runs app
# tasks only, like node3.
#
# The network: a bridge inside a hub namespace joins the nodes (not a bridge of this machine's own
# namespace, whose bridge netfilter and the host engine's FORWARD DROP policy would drop the nodes'
# traffic). Every address the cluster uses lies in the private /16 CLUSTER_NET.0.0/16:
#   CLUSTER_NET.0.0/24          the hub: this machine .1 (a veth of its own), node N .(10+N)
#   CLUSTER_NET.N.0/24          node N's docker0 (--bip)
#   CLUSTER_NET.(16*N).0/20     node N's local networks, docker_gwbridge included (address pool)
#   CLUSTER_NET.128.0/17        the swarm's overlay networks (--default-addr-pool)
# The nodes have no default route, and their resolver is their own hub address, where nothing
# answers: nothing they run can reach beyond these namespaces.
#
# Settings (environment):
#   CLUSTER          name: prefix of the namespaces, host interface, cgroups and node host names (rtdc)
#   CLUSTER_NET      first two octets of the cluster's private /16 (10.213)
#   CLUSTER_NODES    number of nodes, 3 to 9 (3)
#   CLUSTER_DIR      the nodes' data roots, exec roots, sockets, logs (/var/lib/CLUSTER)
#   CLUSTER_ENGINE_TIMEOUT  seconds for an engine to answer, a node to turn Ready in the swarm (60)
#   APP_IMAGE, NGINX_IMAGE, REDIS_IMAGE, POSTGRES_IMAGE   what load-images copies (as stack.sh uses)
#   and for `deploy`, every setting of stack.sh (STACK, SERVER, REPLICAS, HTTP_PORT, ...).
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
self=$here/$(basename -- "${BASH_SOURCE[0]}")

: "${CLUSTER:=rtdc}"
: "${CLUSTER_NET:=10.213}"
: "${CLUSTER_NODES:=3}"
: "${CLUSTER_DIR:=/var/lib/$CLUSTER}"
: "${CLUSTER_ENGINE_TIMEOUT:=60}"

MANAGER=1     # the manager and edge node
DB_NODE=2     # PostgreSQL and Redis

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'cluster.sh: error: %s\n' "$*" >&2
    exit 1
}

check_settings() {
    [[ $CLUSTER =~ ^[a-z][a-z0-9]{0,7}$ ]] ||
        die "CLUSTER '$CLUSTER': 1 to 8 lower-case letters and digits, a letter first (it names interfaces)"
    { [[ $CLUSTER_NET =~ ^10\.([0-9]{1,3})$ ]] && ((BASH_REMATCH[1] <= 255)); } ||
        die "CLUSTER_NET '$CLUSTER_NET': the first two octets of a private /16 in 10.0.0.0/8, e.g. 10.213"
    [[ $CLUSTER_NODES =~ ^[3-9]$ ]] || die "CLUSTER_NODES must be 3 to 9, got '$CLUSTER_NODES'"
    [[ $CLUSTER_DIR == /* ]] || die "CLUSTER_DIR must be an absolute path, got '$CLUSTER_DIR'"
}

check_node() {
    { [[ $1 =~ ^[1-9]$ ]] && (($1 <= CLUSTER_NODES)); } || die "no node '$1': nodes are 1 to $CLUSTER_NODES"
}

check_host() {
    ((EUID == 0)) || die "needs root (network namespaces, mounts, cgroups)"
    local tool
    for tool in ip nsenter unshare dockerd containerd docker; do
        command -v "$tool" >/dev/null || die "'$tool' is missing (packages iproute2, util-linux, docker.io)"
    done
    [[ -n $(cgroup_root) ]] || die "no cgroup hierarchy with the pids controller under /sys/fs/cgroup"
}

# --- Names and addresses ------------------------------------------------------------------------------

hub_ns() { echo "$CLUSTER-hub"; }
node_ns() { echo "$CLUSTER-node$1"; }
node_name() { echo "$CLUSTER-node$1"; }   # its host name, hence its swarm node name
host_if() { echo "$CLUSTER-host"; }
host_address() { echo "$CLUSTER_NET.0.1"; }
node_address() { echo "$CLUSTER_NET.0.$((10 + $1))"; }
node_dir() { echo "$CLUSTER_DIR/node$1"; }
node_socket() { echo "unix://$(node_dir "$1")/docker.sock"; }

# Where the nodes' processes are counted: the pids controller (cgroup v1) or the unified hierarchy.
cgroup_root() {
    if [[ -f /sys/fs/cgroup/pids/cgroup.procs ]]; then
        echo /sys/fs/cgroup/pids
    elif [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
        echo /sys/fs/cgroup
    fi
}
# Node N's engine (dockerd, containerd, the shims) runs in .../CLUSTER/nodeN/engine, its
# containers in .../CLUSTER/nodeN/<id> (dockerd --cgroup-parent): one tree holds the whole node.
node_cgroup() { echo "$(cgroup_root)/$CLUSTER/node$1"; }

ndocker() {
    local n=$1
    shift
    docker -H "$(node_socket "$n")" "$@"
}

# --- The network ----------------------------------------------------------------------------------------

netns_exists() { [[ -e /run/netns/$1 ]]; }
in_ns() {
    local ns=$1
    shift
    nsenter --net="/run/netns/$ns" -- "$@"
}

make_network() {
    local hub n ns
    hub=$(hub_ns)
    ip netns add "$hub"
    in_ns "$hub" ip link set lo up
    in_ns "$hub" ip link add br0 type bridge
    in_ns "$hub" ip link set br0 up
    for ((n = 1; n <= CLUSTER_NODES; n++)); do
        ns=$(node_ns "$n")
        ip netns add "$ns"
        ip link add "node$n" netns "$hub" type veth peer name hub0 netns "$ns"
        in_ns "$hub" ip link set "node$n" master br0 up
        in_ns "$ns" ip link set lo up
        in_ns "$ns" ip address add "$(node_address "$n")/24" dev hub0
        in_ns "$ns" ip link set hub0 up
    done
    # This machine's way in: an address of the /16 on a veth into the hub, and no route beyond it.
    ip link add "$(host_if)" type veth peer name host netns "$hub"
    in_ns "$hub" ip link set host master br0 up
    ip address add "$(host_address)/24" dev "$(host_if)"
    ip link set "$(host_if)" up
}

node_link() { in_ns "$(hub_ns)" ip link set "node$1" "$2"; }

# --- The engines ------------------------------------------------------------------------------------

write_node_config() {
    local n=$1 dir
    dir=$(node_dir "$n")
    mkdir -p "$dir/etc-docker" "$dir/data" "$dir/exec"
    printf 'nameserver %s\n' "$(node_address "$n")" >"$dir/resolv.conf"
    cat >"$dir/etc-docker/daemon.json" <<EOF
{
  "data-root": "$dir/data",
  "exec-root": "$dir/exec",
  "pidfile": "$dir/docker.pid",
  "hosts": ["$(node_socket "$n")"],
  "bip": "$CLUSTER_NET.$n.1/24",
  "default-address-pools": [{"base": "$CLUSTER_NET.$((16 * n)).0/20", "size": 24}],
  "cgroup-parent": "/$CLUSTER/node$n",
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "2"}
}
EOF
}

engine_alive() { ndocker "$1" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# Starts node N's engine detached (its own session, its output in dockerd.log) and waits for it.
# The exec root is runtime state, on a real machine a tmpfs that a reboot empties: a pid file left
# by a killed engine or containerd could name another process by now, which dockerd would wait for.
start_engine() {
    local n=$1 dir deadline
    dir=$(node_dir "$n")
    rm -rf --one-file-system -- "$dir/exec" "$dir/docker.pid"
    mkdir -p "$dir/exec" "$(node_cgroup "$n")/engine"
    setsid "$self" _engine "$n" </dev/null >>"$dir/dockerd.log" 2>&1 &
    deadline=$((SECONDS + CLUSTER_ENGINE_TIMEOUT))
    until engine_alive "$n"; do
        if ((SECONDS >= deadline)); then
            tail -n 30 "$dir/dockerd.log" >&2
            die "node$n's engine did not answer within ${CLUSTER_ENGINE_TIMEOUT}s (log: $dir/dockerd.log)"
        fi
        sleep 0.5
    done
}

# _engine N: the engine's process. It enters the node's cgroup, then its network namespace, with
# a mount and UTS namespace of its own (`ip netns exec` would remount /sys and hide the cgroup
# mounts from runc).
engine_process() {
    local n=$1
    echo "$BASHPID" >"$(node_cgroup "$n")/engine/cgroup.procs"
    exec nsenter --net="/run/netns/$(node_ns "$n")" -- unshare --mount --uts -- "$self" _engine-inside "$n"
}

# _engine-inside N: the node's host name, resolver and /etc/docker (daemon.json, and the engine's
# key.json, its identity), seen by this mount namespace only; then dockerd. A node prefers the
# images it has to asking a registry (there is none).
engine_inside() {
    local n=$1 dir
    dir=$(node_dir "$n")
    hostname "$(node_name "$n")"
    mount --bind "$dir/resolv.conf" /etc/resolv.conf
    mount --bind "$dir/etc-docker" /etc/docker
    DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 exec dockerd
}

# Every process of node N, engine and containers, killed at once; true when none was left.
kill_node_processes() {
    local n=$1 cgroup attempt pids
    cgroup=$(node_cgroup "$n")
    [[ -d $cgroup ]] || return 0
    for ((attempt = 0; attempt < 50; attempt++)); do
        mapfile -t pids < <(find "$cgroup" -name cgroup.procs -exec cat {} + 2>/dev/null)
        ((${#pids[@]} == 0)) && return 0
        kill -KILL "${pids[@]}" 2>/dev/null || true
        sleep 0.2
    done
    die "node$n: processes still alive after SIGKILL: ${pids[*]}"
}

# The cluster's cgroups in every hierarchy (runc makes the containers' in each), deepest first.
remove_cgroups() {
    local top
    while read -r top; do
        find "$top" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done < <(find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d -name "$CLUSTER" 2>/dev/null)
}

wait_node_ready() {
    local n=$1 deadline=$((SECONDS + CLUSTER_ENGINE_TIMEOUT)) state
    while :; do
        state=$(ndocker "$MANAGER" node inspect "$(node_name "$n")" --format '{{.Status.State}}' 2>/dev/null) || state=
        [[ $state == ready ]] && return 0
        ((SECONDS < deadline)) || die "node$n is not ready in the swarm after ${CLUSTER_ENGINE_TIMEOUT}s (state: ${state:-unknown})"
        sleep 1
    done
}

# --- Commands -------------------------------------------------------------------------------------------

up() {
    local n token zone
    check_host
    if netns_exists "$(hub_ns)" || [[ -e $CLUSTER_DIR ]]; then
        die "cluster $CLUSTER exists already (or a part of it): run '$0 down' first"
    fi
    # Whatever fails from here on leaves a part of the cluster: `down` removes it.
    trap 'log "up failed: tearing down what was made"; down' EXIT
    log "network: hub bridge and $CLUSTER_NODES nodes in $CLUSTER_NET.0.0/16"
    make_network
    for ((n = 1; n <= CLUSTER_NODES; n++)); do
        write_node_config "$n"
        log "node$n: starting its engine"
        start_engine "$n"
    done
    log "swarm: node$MANAGER is the manager"
    ndocker "$MANAGER" swarm init --advertise-addr "$(node_address "$MANAGER")" \
        --listen-addr "$(node_address "$MANAGER"):2377" \
        --default-addr-pool "$CLUSTER_NET.128.0/17" --default-addr-pool-mask-length 24 >/dev/null
    token=$(ndocker "$MANAGER" swarm join-token -q worker)
    for ((n = 1; n <= CLUSTER_NODES; n++)); do
        if ((n != MANAGER)); then
            ndocker "$n" swarm join --token "$token" --advertise-addr "$(node_address "$n")" \
                --listen-addr "$(node_address "$n"):2377" "$(node_address "$MANAGER"):2377" >/dev/null
        fi
        wait_node_ready "$n"
        zone=(--label-add "zone=node$n")
        ((n == MANAGER)) && zone+=(--label-add edge=true)
        ((n == DB_NODE)) && zone+=(--label-add db=true)
        ndocker "$MANAGER" node update "${zone[@]}" "$(node_name "$n")" >/dev/null
    done
    trap - EXIT
    status
    log "cluster $CLUSTER is up: DOCKER_HOST=$(node_socket "$MANAGER") reaches the manager"
}

down() {
    local n ns
    check_settings
    for ((n = 1; n <= 9; n++)); do
        kill_node_processes "$n"
    done
    remove_cgroups
    for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }'); do
        [[ $ns == "$CLUSTER-hub" || $ns =~ ^$CLUSTER-node[1-9]$ ]] && ip netns delete "$ns"
    done
    ip link delete "$(host_if)" 2>/dev/null || true   # gone with the hub already, normally
    if [[ -d $CLUSTER_DIR ]]; then
        # The engines' mounts lived in their own mount namespaces, gone with their processes.
        grep -qF " $CLUSTER_DIR/" /proc/self/mountinfo && die "mounts left under $CLUSTER_DIR: not removing it"
        rm -rf --one-file-system -- "$CLUSTER_DIR"
    fi
    log "cluster $CLUSTER is down: no process, namespace, cgroup or data left"
}

# The images the stack runs, into each node that may run them (no registry between the nodes):
# the app's and Redis' everywhere (with REDIS_HA=1 the replica and the sentinels run on every
# node), Nginx's on the edge node, PostgreSQL's on the data node. Images named on the command line
# go to every node.
node_images() {
    local n=$1
    echo "${APP_IMAGE:-realtime-django-stack:local}" "${REDIS_IMAGE:-redis:7.4}"
    ((n == MANAGER)) && echo "${NGINX_IMAGE:-nginx:1.28}"
    ((n == DB_NODE)) && echo "${POSTGRES_IMAGE:-postgres:17}"
    return 0
}

load_images() {
    local n images
    for ((n = 1; n <= CLUSTER_NODES; n++)); do
        if (($# > 0)); then images=("$@"); else read -ra images < <(node_images "$n" | paste -sd ' ' -); fi
        log "node$n: loading ${images[*]}"
        docker save "${images[@]}" | ndocker "$n" load -q >/dev/null
    done
}

deploy() {
    # stack.sh runs in the manager's network namespace: it checks the Nginx of its own node on
    # 127.0.0.1, as on a single node. The placement settings map the stack onto the node labels;
    # clients name the edge node by its address, which Django must accept as a host.
    DOCKER_HOST=$(node_socket "$MANAGER") \
        DJANGO_ALLOWED_HOSTS="${DJANGO_ALLOWED_HOSTS:-$(node_address "$MANAGER")}" \
        SWARM_EDGE_CONSTRAINT='node.labels.edge == true' \
        SWARM_DB_CONSTRAINT='node.labels.db == true' \
        SWARM_REDIS_CONSTRAINT='node.labels.db == true' \
        SWARM_REDIS_REPLICA_CONSTRAINT='node.labels.db != true' \
        SWARM_SENTINEL_1_CONSTRAINT='node.labels.zone == node1' \
        SWARM_SENTINEL_2_CONSTRAINT='node.labels.zone == node2' \
        SWARM_SENTINEL_3_CONSTRAINT='node.labels.zone == node3' \
        SWARM_APP_SPREAD=node.labels.zone \
        REPLICAS="${REPLICAS:-$CLUSTER_NODES}" \
        SWARM_RESOLVE_IMAGE=never \
        in_ns "$(node_ns "$MANAGER")" "$here/stack.sh" deploy
}

kill_node() {
    local n=$1
    check_node "$n"
    ((n != MANAGER)) || die "node$n is the only manager: killing it ends the swarm"
    node_link "$n" down
    kill_node_processes "$n"
    log "node$n killed: its link is down, its engine and containers are gone"
}

restart_node() {
    local n=$1
    check_node "$n"
    kill_node_processes "$n"   # a node still running is rebooted
    node_link "$n" up
    start_engine "$n"
    wait_node_ready "$n"
    log "node$n is back in the swarm"
}

status() {
    local n
    for ((n = 1; n <= CLUSTER_NODES; n++)); do
        if engine_alive "$n"; then
            printf 'node%s  %-15s  engine up    %s\n' "$n" "$(node_address "$n")" "$(node_socket "$n")"
        else
            printf 'node%s  %-15s  engine down\n' "$n" "$(node_address "$n")"
        fi
    done
    ndocker "$MANAGER" node ls --format '{{.Hostname}} {{.Status}} {{.Availability}} {{.ManagerStatus}}' 2>/dev/null || true
}

check_settings
case ${1:-} in
    up) up ;;
    down) down ;;
    load-images)
        shift
        load_images "$@"
        ;;
    deploy) deploy ;;
    kill-node) kill_node "${2:-}" ;;
    restart-node) restart_node "${2:-}" ;;
    status) status ;;
    docker)
        check_node "${2:-}"
        ndocker "$2" "${@:3}"
        ;;
    exec)
        check_node "${2:-}"
        in_ns "$(node_ns "$2")" "${@:3}"
        ;;
    url)
        check_node "${2:-}"
        echo "http://$(node_address "$2"):${3:?usage: cluster.sh url N PORT}"
        ;;
    _engine) engine_process "$2" ;;
    _engine-inside) engine_inside "$2" ;;
    *) die "usage: cluster.sh up|load-images|deploy|kill-node N|restart-node N|down|status|docker N ...|exec N ...|url N PORT" ;;
esac
