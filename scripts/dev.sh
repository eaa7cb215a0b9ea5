#!/usr/bin/env bash
# Bring up the dev environment: install, validate gateway.yaml, compile the `dev` environment.
#   bash scripts/dev.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
PY=.venv/bin/python

$PY -m compiler check gateway.yaml
$PY -m compiler build dev --out build
echo
echo "dev environment compiled into build/dev/ (runtime.json, compose.yaml, Dockerfile, manifest.json)."
echo "Next: .venv/bin/python -m compiler explain chat --env dev"
