#!/usr/bin/env bash
# Make the base image the deploy tests build the gateway from, locally: there is no container
# registry to pull `python:3.11-slim-bookworm` from on a test machine.
#
#   bash scripts/test-base-image.sh [TAG]      (default: switchyard-test/base:bookworm)
#
# A minimal Debian bookworm (debootstrap) with python3 and venv and HAProxy (the same image is
# the base of the gateway image and of the proxy image in the tests), plus a wheelhouse of
# runtime/requirements.txt and a few spare wheels, so that `pip install` inside an image build
# needs no network (PIP_NO_INDEX + PIP_FIND_LINKS=/wheels are baked into the image).
# Idempotent: the image carries a stamp of its inputs and is rebuilt only when they change.
# This is test infrastructure, not something the product does on a user's host.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${1:-switchyard-test/base:bookworm}"
SPARE_WHEELS=(six==1.16.0)   # a small extra package the "dependency change" test adds
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/switchyard"
ROOTFS="$CACHE/rootfs-bookworm"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && PY=.venv/bin/python

stamp=$( { cat "$0" runtime/requirements.txt; printf '%s\n' "${SPARE_WHEELS[@]}"; } | sha256sum | cut -c1-16)
have=$(docker image inspect "$TAG" --format '{{ index .Config.Labels "dev.switchyard.test-base" }}' 2>/dev/null || true)
if [ "$have" = "$stamp" ]; then
  echo "base image $TAG is up to date ($stamp)"
  exit 0
fi

mkdir -p "$CACHE"
if [ ! -x "$ROOTFS/usr/bin/python3" ] || [ ! -x "$ROOTFS/usr/sbin/haproxy" ]; then
  command -v debootstrap >/dev/null || { echo "error: debootstrap is not installed (apt-get install -y debootstrap)" >&2; exit 1; }
  echo "debootstrap bookworm into $ROOTFS (about a minute)"
  tmp="$ROOTFS.tmp.$$"
  rm -rf "$tmp"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,haproxy \
    bookworm "$tmp" http://deb.debian.org/debian > "$CACHE/debootstrap.log" 2>&1 \
    || { echo "error: debootstrap failed; see $CACHE/debootstrap.log" >&2; rm -rf "$tmp"; exit 1; }
  rm -rf "$tmp/var/cache/apt/archives"/*.deb "$tmp/var/lib/apt/lists"/*
  rm -rf "$ROOTFS"
  mv "$tmp" "$ROOTFS"
fi

echo "wheelhouse for runtime/requirements.txt"
rm -rf "$ROOTFS/wheels"
mkdir -p "$ROOTFS/wheels"
"$PY" -m pip download --quiet --only-binary=:all: --dest "$ROOTFS/wheels" \
  -r runtime/requirements.txt "${SPARE_WHEELS[@]}" pip setuptools wheel
# The test machine's package mirror sits behind the host's CA bundle; trust it in the image too.
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"

echo "docker import -> $TAG"
tar -C "$ROOTFS" -c . | docker import \
  --change 'ENV PIP_NO_INDEX=1' \
  --change 'ENV PIP_FIND_LINKS=/wheels' \
  --change 'ENV LANG=C.UTF-8' \
  --change "LABEL dev.switchyard.test-base=$stamp" \
  --change 'CMD ["python3"]' \
  - "$TAG" > /dev/null
echo "base image $TAG ready ($stamp)"
