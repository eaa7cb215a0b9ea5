#!/usr/bin/env bash
# The whole test suite: lint, types, schema drift, then pytest. Works on a fresh machine.
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --test
PY=.venv/bin/python

echo "== ruff"
$PY -m ruff format --check .
$PY -m ruff check .
echo "== mypy"
$PY -m mypy
echo "== schema drift"
$PY -m compiler schema --check
echo "== example config"
$PY -m compiler check gateway.yaml
echo "== pytest"
exec $PY -m pytest "$@"
