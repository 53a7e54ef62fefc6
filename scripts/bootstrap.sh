#!/usr/bin/env bash
# Makes this machine ready for the stack, or for the tests, and says what it does:
#
#   scripts/bootstrap.sh stack    what `make up` needs: a Docker engine, a running daemon, compose v2
#                                 or v1.29, and base images (official ones when a registry answers,
#                                 else the air-gapped stand-ins built here from Debian packages)
#   scripts/bootstrap.sh test     the same, plus the host packages the test suites run (`make test`)
#
# Each step checks first and does nothing when it is done already, so a second run is quiet and
# takes about a second. Installing asks first when a person is at the terminal; YES=1 answers for
# scripts and CI. It installs only with apt (Debian, Ubuntu) as root or through sudo; elsewhere, or
# without root, it stops at once and names what to install.
#
# OFFLINE=1|0 forces the stand-ins or the official images; left unset, the first run decides and
# keeps the decision in .cache/stack.env. The other settings (.env.example documents them):
set -euo pipefail

: "${YES:=0}"                            # 1: install without asking (scripts, CI)
: "${REGISTRY_TIMEOUT:=15}"              # seconds a registry has to answer
: "${DOCKERD_LOG:=/var/log/dockerd.log}" # where a dockerd started here writes

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
state_file=$repo/.cache/stack.env
# Where the machine describes itself; tests point these at fakes.
os_release=${BOOTSTRAP_OS_RELEASE:-/etc/os-release}
init_comm=${BOOTSTRAP_INIT_COMM:-/proc/1/comm}

# Host packages per step: Debian package, then the command that shows it is there (checked on
# machines without dpkg, to name what is missing).
readonly DOCKER_PACKAGES=("docker.io dockerd")
readonly COMPOSE_PACKAGES=("docker-compose docker-compose")
readonly OFFLINE_PACKAGES=(
    "debootstrap debootstrap"
    "python3 python3"
    "python3-pip pip3"
    "python3-venv python3"
)
readonly TEST_PACKAGES=(
    "make make"
    "git git"
    "python3 python3"
    "python3-venv python3"
    "python3-pip pip3"
    "shellcheck shellcheck"
    "gettext-base envsubst"
    "redis-server redis-server"
    "postgresql pg_ctlcluster"
    "nginx-light nginx"
    "chromium chromium"
    "chromium-driver chromedriver"
    "debootstrap debootstrap"
    "wrk wrk"
    "systemd systemd-analyze"
    "prometheus promtool"
    "iproute2 ip"
)

say() { printf 'bootstrap: %s\n' "$*"; }
die() {
    printf 'bootstrap: %s\n' "$*" >&2
    exit 1
}

is_root() { [ "$(id -u)" = 0 ]; }
can_be_root() { is_root || command -v sudo >/dev/null 2>&1; }
as_root() { if is_root; then "$@"; else sudo "$@"; fi; }
has_apt() {
    [ -r "$os_release" ] || return 1
    # shellcheck disable=SC1090  # the machine's own description
    (. "$os_release" && case " ${ID:-} ${ID_LIKE:-} " in *" debian "* | *" ubuntu "*) true ;; *) false ;; esac) &&
        command -v apt-get >/dev/null 2>&1
}

# dpkg's word where there is dpkg (exact, also for packages without a command); else the command.
package_present() { # PACKAGE COMMAND
    if command -v dpkg-query >/dev/null 2>&1; then
        dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
    else
        command -v "$2" >/dev/null 2>&1
    fi
}

missing_packages() { # "PACKAGE COMMAND"... -> the missing packages, one a line
    local entry package command
    for entry in "$@"; do
        read -r package command <<<"$entry"
        package_present "$package" "$command" || echo "$package"
    done
}

# Asks (at a terminal) or requires YES=1 (no terminal), then installs with apt.
install_packages() { # WHAT PACKAGE...
    local what=$1
    shift
    [ "$#" -gt 0 ] || return 0
    if ! has_apt; then
        die "missing for $what: $*. This is not a Debian or Ubuntu machine: install them with its package manager (Docker: https://docs.docker.com/engine/install/), then run this again."
    fi
    if ! can_be_root; then
        die "missing for $what: $*. Install them as root (sudo apt-get install $*), then run this again."
    fi
    say "missing for $what, these Debian packages: $*"
    if [ "$YES" != 1 ]; then
        if [ -t 0 ]; then
            local answer
            read -r -p "bootstrap: install them with apt-get now? [y/N] " answer
            case $answer in [yY]*) ;; *) die "not installed; install them yourself, or answer y" ;; esac
        else
            die "no terminal to ask: rerun with YES=1 to let it install them, or install them yourself"
        fi
    fi
    say "apt-get install $* (a few minutes on a new machine)"
    # An install cut short earlier (Ctrl-C, a lost session) leaves packages unconfigured, and apt
    # refuses to do anything until they are: finish it first (nothing to do otherwise).
    as_root env DEBIAN_FRONTEND=noninteractive dpkg --configure -a
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

ensure_packages() { # WHAT "PACKAGE COMMAND"...
    local what=$1
    shift
    local missing
    mapfile -t missing < <(missing_packages "$@")
    install_packages "$what" "${missing[@]}"
}

# --- Docker --------------------------------------------------------------------------------------

ensure_engine() {
    if command -v docker >/dev/null 2>&1 && { command -v dockerd >/dev/null 2>&1 || docker info >/dev/null 2>&1; }; then
        return 0
    fi
    ensure_packages "the Docker engine" "${DOCKER_PACKAGES[@]}"
    command -v docker >/dev/null 2>&1 || die "docker.io is installed but there is no docker command on PATH"
}

daemon_answers() { docker info >/dev/null 2>&1; }

ensure_daemon() {
    daemon_answers && return 0
    if docker info 2>&1 | grep -qi "permission denied"; then
        die "the Docker daemon runs but this user may not use it: add it to the docker group (sudo usermod -aG docker $USER, then log in again), or run as root"
    fi
    local init=""
    [ -r "$init_comm" ] && init=$(cat "$init_comm")
    if [ "$init" = systemd ]; then
        die "the Docker daemon is not running: start it with 'sudo systemctl start docker' (and 'sudo systemctl enable docker' to keep it), then run this again"
    fi
    can_be_root || die "the Docker daemon is not running, and starting it needs root"
    # No init here runs services (a container, a CI sandbox): start dockerd in the background.
    # Published ports go through the kernel's NAT rather than a userland proxy that copies every
    # byte (the CIS Docker Benchmark's advice; the benchmarks ran this way).
    local log=$DOCKERD_LOG
    say "the Docker daemon is not running and no init starts it here: starting dockerd (log: $log)"
    # shellcheck disable=SC2016  # $1 is the inner shell's: the log path, passed as an argument
    as_root sh -c 'nohup setsid dockerd --userland-proxy=false >>"$1" 2>&1 </dev/null &' sh "$log"
    local waited
    for waited in $(seq 60); do
        daemon_answers && {
            say "dockerd answers (after ${waited} s)"
            return 0
        }
        sleep 1
    done
    die "dockerd did not answer within 60 s; its log: $log"
}

compose_command() {
    if docker compose version >/dev/null 2>&1; then
        echo "docker compose"
    elif command -v docker-compose >/dev/null 2>&1; then
        local version
        version=$(docker-compose version --short 2>/dev/null || true)
        case $version in
            1.29.* | [2-9].*) echo docker-compose ;;
            *) return 1 ;;
        esac
    else
        return 1
    fi
}

ensure_compose() {
    compose_command >/dev/null && return 0
    ensure_packages "Docker Compose (v2, or v1.29)" "${COMPOSE_PACKAGES[@]}"
    compose_command >/dev/null || die "no docker compose v2 and no docker-compose 1.29 after installing; install the compose plugin: https://docs.docker.com/compose/install/"
}

# --- Base images: official ones, or the air-gapped stand-ins -----------------------------------

# The default of an image variable, as compose.yaml defines it (the one place it is defined).
default_image() { # VARIABLE
    sed -n "s/.*\${$1:-\([^}]*\)}.*/\1/p" "$repo/compose.yaml" | head -n 1
}

# A registry answers when the smallest default image pulls within REGISTRY_TIMEOUT seconds.
registry_answers() {
    local image=${REDIS_IMAGE:-$(default_image REDIS_IMAGE)}
    docker image inspect "$image" >/dev/null 2>&1 && return 0
    say "checking whether a registry answers (docker pull $image, at most $REGISTRY_TIMEOUT s)"
    timeout "$REGISTRY_TIMEOUT" docker pull --quiet "$image" >/dev/null 2>&1
}

choose_images() {
    local offline=${OFFLINE:-} source
    if [ -n "$offline" ]; then
        source="OFFLINE=$offline given"
    elif [ -r "$state_file" ] && offline=$(sed -n 's/^OFFLINE=//p' "$state_file") && [ -n "$offline" ]; then
        source="decided on the first run, kept in ${state_file#"$repo"/}; OFFLINE=0 or 1 overrides it"
    else
        if registry_answers; then
            offline=0
            source="a registry answered"
        else
            offline=1
            source="no registry answered within $REGISTRY_TIMEOUT s"
        fi
        mkdir -p "$(dirname "$state_file")"
        printf '# Written by scripts/bootstrap.sh: which base images this machine uses.\nOFFLINE=%s\n' \
            "$offline" >"$state_file"
        source="$source; kept in ${state_file#"$repo"/}, delete it to decide again"
    fi
    case $offline in
        0) say "images: the official ones ($source)" ;;
        1)
            say "images: the air-gapped stand-ins built from Debian packages ($source)"
            ensure_standins
            ;;
        *) die "OFFLINE must be 0 or 1, got '$offline'" ;;
    esac
}

standins_present() {
    local line image
    while IFS= read -r line; do
        case $line in *_IMAGE=*) image=${line#*=} ;; *) continue ;; esac
        docker image inspect "$image" >/dev/null 2>&1 || return 1
    done <"$repo/deploy/offline/images.env"
}

# The stand-in base images, and the wheelhouse the app image installs from (containers here reach
# no package index). Both scripts skip what is up to date; `make image` checks the wheelhouse
# against the lock again before each build.
ensure_standins() {
    local wheelhouse_built=$repo/requirements/wheelhouse/.built-from.sha256
    standins_present && [ -e "$wheelhouse_built" ] && return 0
    ensure_packages "building the stand-in images" "${OFFLINE_PACKAGES[@]}"
    if ! standins_present; then
        can_be_root || die "building the stand-in images needs root once (debootstrap): sudo make offline-images"
        say "building the stand-in images (debootstrap and docker build; about 5 minutes the first time)"
        as_root "$repo/deploy/offline/build-images.sh"
    fi
    if [ ! -e "$wheelhouse_built" ]; then
        say "building the wheelhouse from requirements/runtime.txt with the host's pip"
        "$repo/deploy/offline/build-wheelhouse.sh"
    fi
}

main() {
    local mode=${1:-}
    case $mode in
        stack) ;;
        test)
            local missing service
            mapfile -t missing < <(missing_packages "${TEST_PACKAGES[@]}")
            if [ "${#missing[@]}" -gt 0 ]; then
                install_packages "the test suites" "${missing[@]}"
                # The tests start their own instances on free ports: the packaged ones stay stopped.
                for service in redis-server postgresql nginx; do
                    as_root service "$service" stop >/dev/null 2>&1 || true
                done
                # Of prometheus the tests need only promtool: the daemon its package starts (where
                # no policy-rc.d forbids it) is stopped, and kept from starting at boot. A
                # Prometheus that was installed before is left as it is.
                if printf '%s\n' "${missing[@]}" | grep -qx prometheus; then
                    as_root service prometheus stop >/dev/null 2>&1 || true
                    as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
                fi
            fi
            ;;
        *) die "usage: scripts/bootstrap.sh stack|test" ;;
    esac
    ensure_engine
    ensure_daemon
    ensure_compose
    choose_images
}

main "$@"
