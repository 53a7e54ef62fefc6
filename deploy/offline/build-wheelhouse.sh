#!/usr/bin/env bash
# Build a wheelhouse from the runtime lock, with the host's python3, for images that install
# without an index (containers here cannot reach PyPI):
#
#   bash deploy/offline/build-wheelhouse.sh [LOCK]     # default requirements/runtime.txt
#   ... then in the image: pip install --no-index --find-links requirements/wheelhouse -r requirements/runtime.txt
#
# The wheels are for CPython 3.11 on glibc (the host's python3 must be 3.11, like the Debian
# python3.11 of local/python:3.11-bookworm). Environment markers in the lock are evaluated for
# the *target* interpreter, not the host's: Debian bookworm's python3 is 3.11.2, so e.g.
# `async-timeout ; python_full_version < '3.11.3'` must be in the wheelhouse even when the host
# runs 3.11.7.
#
# Idempotent: the lock's hash (plus target and host Python) is kept next to the wheels, with a
# copy of the lock; when it matches and every pinned wheel is present, nothing is done. A rebuild
# reuses the wheels already there and drops the ones the lock no longer wants.
#
# Environment:
#   WHEELHOUSE                  output directory (default requirements/wheelhouse, which
#                               deploy/Dockerfile reads with OFFLINE_WHEELS=1)
#   PYTHON                      host interpreter (default python3)
#   TARGET_PYTHON_FULL_VERSION  Python version the wheels are installed into (default 3.11.2)
#   REBUILD=1                   rebuild even when the wheelhouse is up to date
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd -- "$here/../.." && pwd)

lock=${1:-$repo/requirements/runtime.txt}
WHEELHOUSE=${WHEELHOUSE:-$repo/requirements/wheelhouse}
PYTHON=${PYTHON:-python3}
TARGET_PYTHON_FULL_VERSION=${TARGET_PYTHON_FULL_VERSION:-3.11.2}
REBUILD=${REBUILD:-0}

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build-wheelhouse.sh: error: %s\n' "$*" >&2; exit 1; }

[[ -f $lock ]] || die "no lock file at $lock"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found"

host_tag=$("$PYTHON" -c 'import sys, sysconfig; print(f"cp{sys.version_info[0]}{sys.version_info[1]}-{sysconfig.get_platform()}")')
target_tag=cp$(cut -d. -f1,2 <<<"$TARGET_PYTHON_FULL_VERSION" | tr -d .)
[[ $host_tag == "$target_tag"-* ]] ||
    die "host $PYTHON is $host_tag but the wheels are for $target_tag (Python $TARGET_PYTHON_FULL_VERSION): set PYTHON to a matching interpreter"

stamp_name=.built-from.sha256 # hash of the lock (+ target/host Python) the wheels were built for
lock_copy_name=.built-from.txt # copy of that lock
stamp_file=$WHEELHOUSE/$stamp_name
stamp="$(sha256sum <"$lock" | cut -d' ' -f1) target=$TARGET_PYTHON_FULL_VERSION host=$host_tag"

# Turn the lock into the requirement lines that apply to the target interpreter, markers
# evaluated and removed (hash options kept), then check or list them.
#   filter LOCK OUT          -> write OUT
#   check  LOCK WHEELHOUSE   -> exit 1 (listing what is missing) unless every pin has a wheel
py_helper() {
    TARGET_PYTHON_FULL_VERSION=$TARGET_PYTHON_FULL_VERSION "$PYTHON" - "$@" <<'PY'
import os, re, sys
from pathlib import Path

try:
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import InvalidVersion, Version
except ImportError:  # pip vendors packaging
    from pip._vendor.packaging.markers import default_environment
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import InvalidVersion, Version

mode, lock, arg = sys.argv[1:4]
full = os.environ["TARGET_PYTHON_FULL_VERSION"]
env = default_environment()
env.update(python_full_version=full, python_version=".".join(full.split(".")[:2]),
           implementation_version=full)

# join continuation lines, drop comments
text = re.sub(r"\\\n", " ", Path(lock).read_text())
reqs = []  # (Requirement, [options])
out = []
for raw in text.splitlines():
    line = re.sub(r"(^|\s)#.*$", "", raw).strip()
    if not line:
        continue
    if line.startswith("-"):
        out.append(line)  # global options (--index-url, --constraint, ...) pass through
        continue
    parts = line.split()
    opts = [p for p in parts if p.startswith("--")]
    spec = " ".join(p for p in parts if not p.startswith("--"))
    req = Requirement(spec)
    if req.marker is not None and not req.marker.evaluate(env):
        continue
    req.marker = None
    reqs.append(req)
    out.append(" ".join([str(req), *opts]))

if mode == "filter":
    Path(arg).write_text("\n".join(out) + "\n")
    sys.exit(0)

# check: every "name==version" pin has a wheel in the wheelhouse
def version(v):
    try:
        return Version(v)
    except InvalidVersion:
        return v

have = set()
for whl in Path(arg).glob("*.whl"):
    name, ver = whl.name.split("-")[:2]
    have.add((canonicalize_name(name), version(ver)))
missing = []
for req in reqs:
    pins = [s.version for s in req.specifier if s.operator in ("==", "===")]
    if req.url or not pins:
        continue
    if not any((canonicalize_name(req.name), version(v)) in have for v in pins):
        missing.append(f"{req.name}=={pins[0]}")
if missing:
    print("missing from the wheelhouse: " + " ".join(missing), file=sys.stderr)
    sys.exit(1)
PY
}

rel() { printf '%s\n' "${1#"$repo"/}"; }

if [[ $REBUILD != 1 && -f $stamp_file && $(<"$stamp_file") == "$stamp" ]] &&
    py_helper check "$lock" "$WHEELHOUSE" 2>/dev/null; then
    log "$(rel "$WHEELHOUSE") already satisfies $(rel "$lock") ($(find "$WHEELHOUSE" -maxdepth 1 -name '*.whl' | wc -l) wheels), skipping (REBUILD=1 to rebuild)"
    exit 0
fi

staging=$(mktemp -d "${TMPDIR:-/tmp}/wheelhouse.XXXXXX")
trap 'rm -rf "$staging"' EXIT

py_helper filter "$lock" "$staging/requirements.txt"
find_links=()
if [[ -d $WHEELHOUSE ]]; then
    find_links=(--find-links "$WHEELHOUSE") # reuse what an earlier run downloaded or built
fi
log "pip wheel $(rel "$lock") for Python $TARGET_PYTHON_FULL_VERSION ($host_tag) into $(rel "$WHEELHOUSE")"
mkdir "$staging/wheels"
"$PYTHON" -m pip wheel --disable-pip-version-check --progress-bar off --wheel-dir "$staging/wheels" \
    "${find_links[@]}" --requirement "$staging/requirements.txt" >&2
py_helper check "$lock" "$staging/wheels"

# Update the wheelhouse in place: only *.whl and the stamp files are ours (the directory may hold
# committed files such as a README).
mkdir -p "$WHEELHOUSE"
rm -f "$stamp_file"
for whl in "$WHEELHOUSE"/*.whl; do
    if [[ -f $whl && ! -f $staging/wheels/${whl##*/} ]]; then
        rm -f "$whl" # no longer in the lock
    fi
done
mv -f "$staging"/wheels/*.whl "$WHEELHOUSE/"
cp "$lock" "$WHEELHOUSE/$lock_copy_name"
printf '%s\n' "$stamp" >"$stamp_file"
log "$(rel "$WHEELHOUSE"): $(find "$WHEELHOUSE" -maxdepth 1 -name '*.whl' | wc -l) wheels for $(rel "$lock")"
