#!/usr/bin/env bash
# Build the three images with podman on a machine without Docker and without a registry (CI,
# the project's own machines), then print nothing but what it did.
#
#   deploy/podman/setup.sh           configure podman, make the local base once, build the images
#   deploy/podman/setup.sh --env     print the `export` lines for podman's configuration
#                                    (eval "$(deploy/podman/setup.sh --env)"; podman images)
#
# Needs (Debian): podman buildah runc debootstrap uidmap slirp4netns fuse-overlayfs; root.
# Everything lives in $AIRGAP_EVAL_PODMAN_DIR (default /var/cache/airgap-eval/podman), outside
# the checkout, so a fresh clone on the same machine reuses the base and podman's layer cache:
# a second run with nothing changed takes seconds.
#
# Why each setting (measured on Debian bookworm's podman 4.3.1):
#   runtime runc         crun refuses a hybrid cgroup layout ("cgroups in hybrid mode not supported")
#   cgroupfs             no systemd session to ask for a cgroup
#   default_ulimits      a container cannot raise an rlimit above the host's hard limit
#   CA bundle mount      pip in a build container trusts what the host's pip trusts
#   local base           no registry: python:3.11-slim-bookworm cannot be pulled; debootstrap
#                        makes the same Debian release with the same `python` name and PATH
set -euo pipefail
cd "$(dirname "$0")/../.."

DIR=${AIRGAP_EVAL_PODMAN_DIR:-/var/cache/airgap-eval/podman}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
# The base recipe's version: bump it when the recipe below changes, and the base is remade.
BASE=localhost/airgap-eval-base:bookworm-python3-1
MIRROR=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' \
    /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# The host's CA bundle: pip's own setting first, then the system one.
CA_BUNDLE=${PIP_CERT:-$(pip config get global.cert 2>/dev/null || true)}
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

write_config() {
    mkdir -p "$DIR/graph" "$DIR/run"
    local nofile
    nofile=$(ulimit -Hn)
    [ "$nofile" = unlimited ] && nofile=1048576
    cat >"$DIR/storage.conf.new" <<EOF
[storage]
driver = "overlay"
graphroot = "$DIR/graph"
runroot = "$DIR/run"
EOF
    cat >"$DIR/containers.conf.new" <<EOF
[containers]
cgroups = "enabled"
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]
volumes = ["$CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    mv "$DIR/storage.conf.new" "$DIR/storage.conf"
    mv "$DIR/containers.conf.new" "$DIR/containers.conf"
}

print_env() {
    echo "export CONTAINERS_CONF=$DIR/containers.conf"
    echo "export CONTAINERS_STORAGE_CONF=$DIR/storage.conf"
}

# Debian's python3 where the Dockerfile expects python:slim's: `python` on PATH, PATH with
# /usr/local first (a Dockerfile's `PATH=/venv/bin:$PATH` keeps useradd), UTF-8.
make_base() {
    if podman image exists "$BASE"; then
        return
    fi
    local rootfs start
    start=$(date +%s)
    rootfs=$(mktemp -d "$DIR/rootfs.XXXXXX")
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python-is-python3,ca-certificates \
        bookworm "$rootfs" "$MIRROR" >"$DIR/debootstrap.log" 2>&1 \
        || { tail -20 "$DIR/debootstrap.log" >&2; rm -rf "$rootfs"; exit 1; }
    ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar --numeric-owner -C "$rootfs" -c . | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        - "$BASE" >/dev/null
    rm -rf "$rootfs"
    echo "base $BASE: $(($(date +%s) - start)) s (debootstrap from $MIRROR)"
}

# The host's package index (if it is not PyPI) as a build arg: it exists only at build time
# and the Dockerfile's default is empty. file:// indexes of the host are not reachable inside.
pip_args() {
    local index
    index=${PIP_INDEX_URL:-$(pip config get global.index-url 2>/dev/null || true)}
    case "$index" in
        http://* | https://*) echo "--build-arg=PIP_INDEX_URL=$index" ;;
    esac
}

build() {  # build TARGET IMAGE
    local start
    start=$(date +%s)
    # --network host: a build needs PyPI only, and the host's network needs no bridge setup.
    # shellcheck disable=SC2046
    podman build --quiet --layers --network host --target "$1" \
        --build-arg "PYTHON_IMAGE=$BASE" $(pip_args) \
        --build-arg "VERSION=$VERSION" \
        --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
        -t "localhost/$2:$VERSION" . >"$DIR/build-$1.log" 2>&1 \
        || { tail -40 "$DIR/build-$1.log" >&2; echo "build of $1 failed: $DIR/build-$1.log" >&2; exit 1; }
    echo "$2:$VERSION: $(($(date +%s) - start)) s"
}

if [ "${1:-}" = --env ]; then
    print_env
    exit 0
fi
for tool in podman debootstrap runc; do
    command -v "$tool" >/dev/null || {
        echo "$tool is missing: apt-get install -y podman buildah runc debootstrap uidmap" \
            "slirp4netns fuse-overlayfs" >&2
        exit 1
    }
done
write_config
eval "$(print_env)"
make_base
build initcontainer airgap-eval-init
build sidecar airgap-eval-sidecar
build adapter airgap-eval-adapter
# Build-cache entries a week old and used by no image (older Dockerfiles, locks, sources) go,
# so the cache does not grow with every change; one still current is rebuilt once a week.
podman image prune --force --filter until=168h >/dev/null
