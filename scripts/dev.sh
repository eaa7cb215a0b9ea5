#!/usr/bin/env bash
# Bring up the dev environment on this machine: install, validate gateway.yaml, compile `dev`,
# make a dev gateway key, and serve the gateway on 127.0.0.1 at dev's port. Provider keys set
# in your shell (OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY) are used; without them
# every route is answered by the offline `mock` provider.
#
#   bash scripts/dev.sh                 # foreground; Ctrl-C stops the gateway
#   bash scripts/dev.sh --background    # start it in the background (log: .switchyard/dev/gateway.log)
#   bash scripts/dev.sh --stop          # stop a background gateway
# SWITCHYARD_DEV_PORT and SWITCHYARD_DEV_DATA override the port (environments.dev.port) and
# the data directory (.switchyard/dev).
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=foreground
case "${1:-}" in
  --background|-d) MODE=background ;;
  --stop) MODE=stop ;;
  "") ;;
  *) echo "usage: bash scripts/dev.sh [--background | --stop]" >&2; exit 2 ;;
esac

DATA="${SWITCHYARD_DEV_DATA:-.switchyard/dev}"   # overridable for tests
PIDFILE="$DATA/gateway.pid"

if [ "$MODE" = stop ]; then
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    kill "$(cat "$PIDFILE")"
    echo "stopped the dev gateway (pid $(cat "$PIDFILE"))"
  else
    echo "no dev gateway is running"
  fi
  rm -f "$PIDFILE"
  exit 0
fi

bash scripts/bootstrap.sh
PY=.venv/bin/python

$PY -m compiler check gateway.yaml
$PY -m compiler build dev --out build >/dev/null
PORT="${SWITCHYARD_DEV_PORT:-$($PY -c 'import json; print(json.load(open("build/dev/manifest.json"))["port"])')}"
URL="http://127.0.0.1:$PORT"

if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  echo "error: a dev gateway is already running (pid $(cat "$PIDFILE")); stop it with: bash scripts/dev.sh --stop" >&2
  exit 1
fi
if $PY -c "import socket,sys; s=socket.socket(); sys.exit(0 if s.connect_ex(('127.0.0.1', $PORT)) == 0 else 1)"; then
  echo "error: port $PORT on 127.0.0.1 is in use; stop what listens there or change environments.dev.port in gateway.yaml" >&2
  exit 1
fi

# A dev key, kept (0600) in the git-ignored data dir so reruns print the same one.
mkdir -p "$DATA" && chmod 700 "$DATA"
KEYFILE="$DATA/dev.key"
if [ -f "$KEYFILE" ]; then
  KEY_ID="$(cut -d_ -f3 "$KEYFILE")"
  if ! $PY -m runtime keys list --env dev --data-dir "$DATA" --json 2>/dev/null \
      | $PY -c "import json,sys; sys.exit(0 if any(k['id']=='$KEY_ID' and k['status']=='active' for k in json.load(sys.stdin)) else 1)"; then
    rm -f "$KEYFILE"
  fi
fi
if [ ! -f "$KEYFILE" ]; then
  (umask 077 && $PY -m runtime keys create --env dev --org acme --name "dev-$(id -un)" --data-dir "$DATA" 2>/dev/null | tail -n1 > "$KEYFILE")
fi
KEY="$(cat "$KEYFILE")"

$PY -m runtime serve --config build/dev/runtime.json --port "$PORT" --data-dir "$DATA" --log-level warning \
  > "$DATA/gateway.log" 2>&1 &
PID=$!
echo "$PID" > "$PIDFILE"
if [ "$MODE" = foreground ]; then
  trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -f "$PIDFILE"' INT TERM EXIT
fi

for _ in $(seq 1 100); do
  if ! kill -0 "$PID" 2>/dev/null; then
    echo "error: the gateway exited; its log:" >&2
    cat "$DATA/gateway.log" >&2
    exit 1
  fi
  if $PY -c "import urllib.request,sys; urllib.request.urlopen('$URL/readyz', timeout=1)" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
PROVIDERS="$(grep -m1 'providers:' "$DATA/gateway.log" | sed 's/^ *providers: //')"

cat <<INFO

Switchyard dev gateway is up: $URL   (environment dev)
  providers: $PROVIDERS
  key:       $KEY
  routes:    $($PY -c "import json; print(', '.join(json.load(open('build/dev/runtime.json'))['routes']))")
  request log: .venv/bin/python -m runtime requests --env dev --data-dir $DATA

Try it:

curl -s $URL/v1/chat/completions \\
  -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \\
  -d '{"model": "chat", "messages": [{"role": "user", "content": "Hello!"}]}'

.venv/bin/python - <<'PY'
from openai import OpenAI
client = OpenAI(base_url="$URL/v1", api_key="$KEY")
reply = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Hello!"}])
print(reply.choices[0].message.content)
PY

INFO

if [ "$MODE" = foreground ]; then
  echo "Logs: $DATA/gateway.log. Ctrl-C stops the gateway."
  wait "$PID"
else
  echo "Running in the background (pid $PID). Stop it with: bash scripts/dev.sh --stop"
fi
