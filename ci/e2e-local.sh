#!/usr/bin/env bash
# The full path of a deployment, with real processes instead of a cluster:
#
#   WebSocket clients → socketless gateway (from cfn/websocket-api.yml)
#     → haproxy (health-checks /readyz like an ALB target group) → 3 × socketless serve
#     → moto (DynamoDB)
#
# Clients send messages continuously while two backends get SIGTERM, one after the other, as
# KEDA scaling down or a rollout would do. It asserts zero client-visible errors, every message
# answered, and sessions intact, and prints the figures. Everything listens on 127.0.0.1 and is
# stopped by PID at the end.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

need_apt haproxy haproxy
need_venv
CLIENTS="${E2E_CLIENTS:-16}"
DURATION="${E2E_DURATION:-16}"

log "building socketless and the load client"
cargo build --locked --quiet --bin socketless --example ws_load
BIN="$ROOT/target/debug/socketless"
LOAD="$ROOT/target/debug/examples/ws_load"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work="$(mktemp -d)"
pids=()
cleanup() {
  kill_tree "${pids[@]}" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_http() { # URL
  for _ in $(seq 1 200); do
    python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  die "$1 never answered"
}

moto_port=$(free_port)
moto_server -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$moto_port/moto-api/"

export AWS_ACCESS_KEY_ID=e2e AWS_SECRET_ACCESS_KEY=e2e AWS_REGION=us-east-1
SECRET="e2e-local-shared-secret-0123"
TABLE=e2e-sessions
declare -a bport iport bpid
for i in 0 1 2; do
  bport[$i]=$(free_port)
  iport[$i]=$(free_port)
  "$BIN" serve --listen "127.0.0.1:${bport[$i]}" --internal-listen "127.0.0.1:${iport[$i]}" \
    --store dynamodb --table "$TABLE" --dynamodb-endpoint "http://127.0.0.1:$moto_port" --create-table \
    --shared-secret "$SECRET" --shutdown-delay 2s --drain-timeout 10s >"$work/serve$i.log" 2>&1 &
  bpid[$i]=$!
  pids+=(${bpid[$i]})
done
for i in 0 1 2; do wait_http "http://127.0.0.1:${iport[$i]}/readyz"; done

ha_port=$(free_port)
cat >"$work/haproxy.cfg" <<CFG
global
  maxconn 4096
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  # Like an ALB: a request that could not be delivered goes to another healthy target.
  retries 3
  option redispatch 1
  retry-on conn-failure empty-response response-timeout
  option http-buffer-request
frontend integration
  bind 127.0.0.1:$ha_port
  default_backend backends
backend backends
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server inter 300ms fall 1 rise 2
  server b0 127.0.0.1:${bport[0]} check
  server b1 127.0.0.1:${bport[1]} check
  server b2 127.0.0.1:${bport[2]} check
CFG
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.log" 2>&1 &
pids+=($!)

gw_port=$(free_port)
"$BIN" gateway --listen "127.0.0.1:$gw_port" --param "IntegrationUri=http://127.0.0.1:$ha_port" \
  --param "SharedSecret=$SECRET" --param StageName=dev --param DisconnectContext=true >"$work/gateway.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$gw_port/readyz"
"$BIN" probe "ws://127.0.0.1:$gw_port/dev" --message warmup --timeout 10s >/dev/null

log "$CLIENTS clients for ${DURATION}s; SIGTERM to two of three backends meanwhile"
"$LOAD" "ws://127.0.0.1:$gw_port/dev" --clients "$CLIENTS" --duration "${DURATION}s" --warmup 0s >"$work/load.json" 2>"$work/load.err" &
load=$!

sleep 3
kill -TERM "${bpid[0]}"
sleep 5
kill -TERM "${bpid[1]}"
sleep 3
sessions=$(python3 - "$moto_port" "$TABLE" <<'PY'
import sys, boto3
db = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1")
print(len(db.scan(TableName=sys.argv[2], ConsistentRead=True)["Items"]))
PY
)
wait "$load" || true
codes=()
for i in 0 1; do
  rc=0
  wait "${bpid[$i]}" || rc=$?
  codes+=("$rc")
done

cat "$work/load.err" >&2 || true
read -r sent answered errors rate < <(python3 - "$work/load.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(r["sent"], r["answered"], r["errors"], r["msgs_per_sec"])
PY
)
echo
echo "e2e-local figures:"
echo "  clients:                 $CLIENTS"
echo "  messages sent:           $sent"
echo "  messages answered:       $answered"
echo "  client-visible errors:   $errors"
echo "  backends terminated:     2 of 3 (exit codes: ${codes[*]})"
echo "  sessions during the run: $sessions of $CLIENTS"
echo "  throughput:              $rate msg/s"

fail=0
[ "$errors" -eq 0 ] || { echo "FAILED: $errors client-visible errors"; fail=1; }
[ "$sent" -gt 0 ] && [ "$sent" -eq "$answered" ] || { echo "FAILED: $answered of $sent messages answered"; fail=1; }
[ "$sessions" -eq "$CLIENTS" ] || { echo "FAILED: $sessions sessions for $CLIENTS clients"; fail=1; }
[ "${codes[0]}" -eq 0 ] && [ "${codes[1]}" -eq 0 ] || { echo "FAILED: terminated backends exited ${codes[*]}"; fail=1; }
if [ "$fail" -ne 0 ]; then
  tail -n 20 "$work"/serve0.log "$work"/gateway.log "$work"/haproxy.log >&2 || true
  exit 1
fi
echo "e2e-local: 4 passed, 0 failed"
