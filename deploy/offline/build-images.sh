#!/usr/bin/env bash
# Build stand-ins for the official python / nginx / redis / postgres / prometheus /
# nginx-prometheus-exporter images from Debian bookworm packages, for machines that cannot pull
# from a registry.
#
#   bash deploy/offline/build-images.sh        # needs root (debootstrap, chroot) on first run
#   make ... OFFLINE=1                         # the Makefile then includes deploy/offline/images.env
#
# 1. debootstrap (minbase) into .cache/offline/rootfs and `docker import` it as
#    local/debian:bookworm -- skipped when that image already exists.
# 2. `docker build` each stand-in from deploy/offline/<name>.Dockerfile -- skipped when the
#    image exists and was built from the same Dockerfile/helpers and the same base image.
# 3. Print the image variables and write them to deploy/offline/images.env.
#
# Environment:
#   DEBIAN_MIRROR           Debian archive URL (default: the host's apt sources, else deb.debian.org)
#   DEBIAN_SECURITY_MIRROR  security archive URL (default: the host's apt sources, else deb.debian.org)
#   REBUILD=1               rebuild the stand-ins (without Docker's layer cache) even when up to date
#   REBUILD_BASE=1          re-run debootstrap and re-import local/debian:bookworm (implies REBUILD=1)
set -euo pipefail

readonly SUITE=bookworm
readonly BASE_IMAGE=local/debian:bookworm
readonly LABEL_NS=local.offline-standin

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "$here/../.." && pwd)
cache_dir=$repo/.cache/offline
rootfs=$cache_dir/rootfs
rootfs_stamp=$cache_dir/rootfs.stamp
env_file=$here/images.env

REBUILD=${REBUILD:-0}
REBUILD_BASE=${REBUILD_BASE:-0}
if [[ $REBUILD_BASE == 1 ]]; then
    REBUILD=1
fi

# variable  image  dockerfile  [helper files copied by that Dockerfile]
readonly IMAGES=(
    "PYTHON_IMAGE   local/python:3.11-bookworm python.Dockerfile"
    "NGINX_IMAGE    local/nginx:bookworm       nginx.Dockerfile   nginx.conf nginx-entrypoint.sh nginx-20-envsubst-on-templates.sh"
    "REDIS_IMAGE    local/redis:bookworm       redis.Dockerfile   redis-entrypoint.sh"
    "POSTGRES_IMAGE local/postgres:bookworm    postgres.Dockerfile postgres-entrypoint.sh"
    "PROMETHEUS_IMAGE     local/prometheus:bookworm     prometheus.Dockerfile"
    "NGINX_EXPORTER_IMAGE local/nginx-exporter:bookworm nginx-exporter.Dockerfile"
)

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build-images.sh: error: %s\n' "$*" >&2; exit 1; }
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }
image_id() { docker image inspect --format '{{.Id}}' "$1"; }
image_label() { docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }

# Print "suite uri" for every Debian source the host's apt is configured with
# (deb822 *.sources and one-line *.list files).
host_apt_sources() {
    local f
    shopt -s nullglob
    for f in /etc/apt/sources.list.d/*.sources; do
        awk '
            function flush(  i, j, n, m, u, s) {
                if (types ~ /(^| )deb( |$)/ && enabled !~ /^no$/) {
                    n = split(uris, u, " "); m = split(suites, s, " ")
                    for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print s[j], u[i]
                }
                types = uris = suites = enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            tolower($1) == "types:"   { sub(/^[^:]*:[ \t]*/, ""); types = $0 }
            tolower($1) == "uris:"    { sub(/^[^:]*:[ \t]*/, ""); uris = $0 }
            tolower($1) == "suites:"  { sub(/^[^:]*:[ \t]*/, ""); suites = $0 }
            tolower($1) == "enabled:" { sub(/^[^:]*:[ \t]*/, ""); enabled = tolower($0) }
            END { flush() }
        ' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        # deb [options] uri suite components...
        awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ } print $(i + 1), $i }' "$f"
    done
    shopt -u nullglob
}

pick_mirror() { # suite fallback
    local uri
    uri=$(host_apt_sources | awk -v s="$1" '$1 == s { print $2; exit }')
    printf '%s\n' "${uri:-$2}"
}

umount_rootfs() {
    local m
    for m in proc sys; do
        if mountpoint -q "$rootfs/$m" 2>/dev/null; then
            umount "$rootfs/$m" || umount -l "$rootfs/$m"
        fi
    done
}

in_rootfs() { chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive "$@"; }
in_rootfs_apt() { in_rootfs apt-get -o Dpkg::Use-Pty=0 "$@"; }

build_rootfs() {
    local mirror=$1 security=$2 arch stamp
    arch=$(dpkg --print-architecture)
    stamp="suite=$SUITE arch=$arch mirror=$mirror security=$security"
    if [[ $REBUILD_BASE != 1 && -f $rootfs_stamp && $(<"$rootfs_stamp") == "$stamp" ]]; then
        log "reusing the debootstrapped rootfs in ${rootfs#"$repo"/}"
        return
    fi
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
    [[ $(id -u) == 0 ]] || die "building $BASE_IMAGE needs root (debootstrap, chroot): run with sudo"

    umount_rootfs
    rm -rf --one-file-system "$rootfs" "$rootfs_stamp"
    mkdir -p "$cache_dir"
    log "debootstrap --variant=minbase $SUITE ($arch) from $mirror"
    debootstrap --variant=minbase --arch="$arch" "$SUITE" "$rootfs" "$mirror" >&2

    log "configuring apt in the rootfs (updates + security, no recommends) and upgrading"
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # What the official debian images configure (debuerreotype), plus no recommends/suggests.
    cat >"$rootfs/etc/apt/apt.conf.d/docker-no-recommends" <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
EOF
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    printf 'Acquire::Languages "none";\n' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
    printf 'Acquire::GzipIndexes "true";\n' >"$rootfs/etc/apt/apt.conf.d/docker-gzip-indexes"
    printf 'Apt::AutoRemove::SuggestsImportant "false";\n' >"$rootfs/etc/apt/apt.conf.d/docker-autoremove-suggests"
    # Like debian:*-slim (the base of the official python and postgres images): no docs/man/locales.
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
EOF
    # Package installs must never try to start services in a build container.
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod 0755 "$rootfs/usr/sbin/policy-rc.d"

    # debootstrap copied the host's resolv.conf in, so apt works in the chroot.
    trap umount_rootfs EXIT
    mount -t proc proc "$rootfs/proc"
    in_rootfs_apt update >&2
    in_rootfs_apt -y -o Dpkg::Options::=--force-confold dist-upgrade >&2
    in_rootfs_apt clean
    umount_rootfs
    trap - EXIT

    log "slimming the rootfs"
    find "$rootfs/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    local d
    for d in groff info linda lintian/overrides locale man; do
        if [[ -d $rootfs/usr/share/$d ]]; then
            find "$rootfs/usr/share/$d" -mindepth 1 -delete
        fi
    done
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
        "$rootfs"/var/log/apt/* "$rootfs"/var/log/*.log "$rootfs"/var/lib/dpkg/*-old \
        "$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/root/.bash_history
    # Docker provides these at run time; do not ship the build host's.
    : >"$rootfs/etc/resolv.conf"
    : >"$rootfs/etc/hostname"
    : >"$rootfs/etc/machine-id"

    printf '%s\n' "$stamp" >"$rootfs_stamp"
}

build_base() {
    if image_exists "$BASE_IMAGE" && [[ $REBUILD_BASE != 1 ]]; then
        log "$BASE_IMAGE exists, skipping debootstrap (REBUILD_BASE=1 to redo it)"
        return
    fi
    local mirror security
    mirror=${DEBIAN_MIRROR:-$(pick_mirror "$SUITE" http://deb.debian.org/debian)}
    security=${DEBIAN_SECURITY_MIRROR:-$(pick_mirror "$SUITE-security" http://deb.debian.org/debian-security)}
    mirror=${mirror%/}
    security=${security%/}
    build_rootfs "$mirror" "$security"

    log "docker import $BASE_IMAGE"
    tar --numeric-owner -C "$rootfs" -c --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' . |
        docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["bash"]' \
            --message "debootstrap --variant=minbase $SUITE $mirror" \
            - "$BASE_IMAGE" >/dev/null
}

# Hash of everything an image is built from: its Dockerfile, helper files, and the base image.
inputs_hash() {
    local f
    {
        image_id "$BASE_IMAGE"
        for f in "$@"; do
            sha256sum <"$here/$f"
        done
    } | sha256sum | cut -d' ' -f1
}

build_standin() {
    local tag=$1 dockerfile=$2 hash old_id=
    shift 2
    hash=$(inputs_hash "$dockerfile" "$@")
    if image_exists "$tag"; then
        old_id=$(image_id "$tag")
    fi
    if [[ $REBUILD != 1 ]] && image_exists "$tag"; then
        if [[ $(image_label "$tag" "$LABEL_NS.inputs") == "$hash" ]]; then
            log "$tag is up to date, skipping (REBUILD=1 to rebuild)"
            return
        fi
        log "$tag exists but its Dockerfile, helpers or base image changed: rebuilding"
    fi
    local -a no_cache=()
    if [[ $REBUILD == 1 ]]; then
        no_cache=(--no-cache) # a rebuild asked for should fetch current packages
    fi
    log "docker build $tag from deploy/offline/$dockerfile"
    docker build "${no_cache[@]}" \
        --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --label "$LABEL_NS.inputs=$hash" \
        --file "$here/$dockerfile" \
        --tag "$tag" \
        "$here" >&2
    # Drop the image this one replaces (best effort: a container may still use it).
    if [[ -n $old_id && $old_id != "$(image_id "$tag")" ]]; then
        docker rmi "$old_id" >/dev/null 2>&1 || true
    fi
}

main() {
    command -v docker >/dev/null || die "docker is not installed"
    docker info >/dev/null 2>&1 || die "cannot talk to dockerd (is it running, and may this user use it?)"
    # Without the buildx plugin, newer docker CLIs fall back to the legacy builder anyway.
    if [[ -z ${DOCKER_BUILDKIT:-} ]] && ! docker buildx version >/dev/null 2>&1; then
        export DOCKER_BUILDKIT=0
    fi

    local start=$SECONDS
    build_base

    local line var tag dockerfile
    local -a fields
    local env_text="# Stand-in images built from Debian bookworm packages by deploy/offline/build-images.sh.
# The Makefile includes this file when OFFLINE=1; docker-compose can read it with --env-file.
"
    for line in "${IMAGES[@]}"; do
        read -r -a fields <<<"$line"
        var=${fields[0]} tag=${fields[1]} dockerfile=${fields[2]}
        build_standin "$tag" "$dockerfile" "${fields[@]:3}"
        env_text+="$var=$tag"$'\n'
    done

    if [[ ! -f $env_file || $(<"$env_file")$'\n' != "$env_text" ]]; then
        printf '%s' "$env_text" >"$env_file"
        log "wrote ${env_file#"$repo"/}"
    fi
    log "done in $((SECONDS - start))s; use these variables (OFFLINE=1 does it for make):"
    grep -v '^#' "$env_file"
}

main "$@"
