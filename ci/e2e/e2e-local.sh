#!/usr/bin/env bash
# The full path of a deployment, with real processes instead of a cluster:
#
#   WebSocket clients → socketless gateway (from cfn/websocket-api.yml)
#     → ALB twin (ci/fixtures/alb_twin.rs) → 3 × socketless serve → moto (DynamoDB)
#
# The ALB twin behaves like an ALB target group, not like a kind load balancer: it health-checks
# /readyz every second, keeps sending new requests to a target for 10 s after it turns unhealthy
# (the load balancer controller's deregistration lag), pools idle target connections for 60 s,
# and never retries (a refused or closed target connection is a 502).
#
# The backends get the chart's default timings, read from chart/socketless/values.yaml and
# passed as the chart passes them (SOCKETLESS_* variables). Clients send messages continuously
# while two backends get SIGTERM, one after the other, as KEDA scaling down or a rollout would
# do. It asserts zero client-visible errors, every message answered, sessions intact and exit
# codes 0, and prints the figures.
#
# E2E_TIMINGS=old runs the same scenario with the chart's former defaults (shutdown delay 5 s,
# drain 20 s, keep-alive 30 s) and only prints the figures: it shows what the defaults fix.
#
# A second phase (ci/e2e/e2e-scaleout.py) runs the gateway on three replicas behind haproxy, with
# three backends replying asynchronously: pushes through every replica reach their clients, one
# replica is killed and another terminated.
#
# Everything listens on 127.0.0.1 and is stopped by PID at the end.
set -euo pipefail
# shellcheck source=../lib/lib.sh
source "$(dirname "$0")/../lib/lib.sh"
cd "$ROOT"

need_venv
need_apt haproxy haproxy
CLIENTS="${E2E_CLIENTS:-16}"
DURATION="${E2E_DURATION:-26}"
TIMINGS="${E2E_TIMINGS:-chart}"
LAG="${E2E_DEREGISTRATION_LAG:-10s}"

# The chart's defaults, as the chart renders them.
read -r shutdown_delay drain_timeout keep_alive alb_idle < <(python3 - <<'PY'
import yaml
v = yaml.safe_load(open("chart/socketless/values.yaml"))
c = v["config"]
print(f'{c["shutdownDelaySeconds"]}s {c["drainTimeoutSeconds"]}s {c["keepAliveTimeoutSeconds"]}s {v["ingress"]["idleTimeoutSeconds"]}s')
PY
)
case "$TIMINGS" in
  chart) ;;
  old) shutdown_delay=5s drain_timeout=20s keep_alive=30s ;;
  *) die "E2E_TIMINGS must be chart or old, not $TIMINGS" ;;
esac

log "building socketless, the load client and the ALB twin"
cargo build --locked --quiet --bin socketless --example ws_load --example alb_twin
BIN="$ROOT/target/debug/socketless"
LOAD="$ROOT/target/debug/examples/ws_load"
TWIN="$ROOT/target/debug/examples/alb_twin"

work="$(mktemp -d)"
pids=()
cleanup() {
  kill_tree "${pids[@]}" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

moto_port=$(free_port)
python3 ci/lib/moto_atomic.py -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$moto_port/moto-api/"

export AWS_ACCESS_KEY_ID=e2e AWS_SECRET_ACCESS_KEY=e2e AWS_REGION=us-east-1
SECRET="e2e-local-shared-secret-0123"
TABLE=e2e-sessions
log "backends with $TIMINGS timings: shutdown delay $shutdown_delay, drain $drain_timeout, keep-alive $keep_alive"
declare -a bport iport bpid
for i in 0 1 2; do
  bport[i]=$(free_port)
  iport[i]=$(free_port)
  SOCKETLESS_SHUTDOWN_DELAY="$shutdown_delay" SOCKETLESS_DRAIN_TIMEOUT="$drain_timeout" \
    SOCKETLESS_KEEP_ALIVE_TIMEOUT="$keep_alive" SOCKETLESS_SHARED_SECRET="$SECRET" \
    "$BIN" serve --listen "127.0.0.1:${bport[$i]}" --internal-listen "127.0.0.1:${iport[$i]}" \
    --store dynamodb --table "$TABLE" --dynamodb-endpoint "http://127.0.0.1:$moto_port" --create-table \
    >"$work/serve$i.log" 2>&1 &
  bpid[i]=$!
  pids+=("${bpid[i]}")
done
for i in 0 1 2; do wait_http "http://127.0.0.1:${iport[$i]}/readyz"; done

twin_port=$(free_port)
"$TWIN" --listen "127.0.0.1:$twin_port" --target "127.0.0.1:${bport[0]}" --target "127.0.0.1:${bport[1]}" \
  --target "127.0.0.1:${bport[2]}" --deregistration-lag "$LAG" --idle-timeout "$alb_idle" --health-interval 1s \
  >"$work/twin.log" 2>&1 &
twin=$!
pids+=("$twin")

gw_port=$(free_port)
"$BIN" gateway --listen "127.0.0.1:$gw_port" --param "IntegrationUri=http://127.0.0.1:$twin_port" \
  --param "SharedSecret=$SECRET" --param StageName=dev --param DisconnectContext=true >"$work/gateway.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$gw_port/readyz"
"$BIN" probe "ws://127.0.0.1:$gw_port/dev" --message warmup --timeout 10s >/dev/null

log "$CLIENTS clients for ${DURATION}s; SIGTERM to two of three backends meanwhile"
"$LOAD" "ws://127.0.0.1:$gw_port/dev" --clients "$CLIENTS" --duration "${DURATION}s" --warmup 0s --keep-going \
  >"$work/load.json" 2>"$work/load.err" &
load=$!

# Both terminations, the twin's lag after each and both pods' stop of accepting fall inside the
# load: b0 at 3 s (out of rotation at about 14 s), b1 at 8 s (about 19 s).
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
kill -TERM "$twin" 2>/dev/null || true
wait "$twin" 2>/dev/null || true

head -n 5 "$work/load.err" >&2 || true
read -r sent answered errors rate < <(python3 - "$work/load.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(r["sent"], r["answered"], r["errors"], r["msgs_per_sec"])
PY
)
bad_gateway=$(sed -n 's/^alb_twin: .* requests, \([0-9]*\) answered 502$/\1/p' "$work/twin.log")
echo
echo "e2e-local figures ($TIMINGS timings: shutdown delay $shutdown_delay, drain $drain_timeout, keep-alive $keep_alive;"
echo "  ALB twin: deregistration lag $LAG, idle timeout $alb_idle, no retries):"
grep '^alb_twin: routing to' "$work/twin.log" | sed 's/^/  /'
echo "  clients:                 $CLIENTS"
echo "  messages sent:           $sent"
echo "  messages answered:       $answered"
echo "  client-visible errors:   $errors"
echo "  502s from the ALB twin:  ${bad_gateway:-?}"
echo "  backends terminated:     2 of 3 (exit codes: ${codes[*]})"
echo "  sessions during the run: $sessions of $CLIENTS"
echo "  throughput:              $rate msg/s"

if [ "$TIMINGS" = old ]; then
  echo "e2e-local (old timings, figures only): $errors client-visible errors, $answered of $sent answered"
  exit 0
fi

# Each assertion in the tally (ci/lib/lib.sh): holds CONDITION_VALUE LABEL (1 holds, 0 not).
holds() { if [ "$1" = 1 ]; then ok "$2"; else bad "$2"; fi; }
holds "$((errors == 0))" "$errors client-visible errors"
holds "$((sent > 0 && sent == answered))" "$answered of $sent messages answered"
holds "$((sessions == CLIENTS))" "$sessions sessions for $CLIENTS clients"
holds "$((codes[0] == 0 && codes[1] == 0))" "terminated backends exited ${codes[*]}"
if [ "$TALLY_FAILED" -ne 0 ]; then
  tail -n 20 "$work"/serve0.log "$work"/gateway.log "$work"/twin.log >&2 || true
fi
log "scale-out phase: three gateways, pushes through every replica, one killed, one terminated"
if python3 ci/e2e/e2e-scaleout.py "$BIN"; then
  ok "scale-out phase (ci/e2e/e2e-scaleout.py)"
else
  bad "scale-out phase (ci/e2e/e2e-scaleout.py)"
fi
tally_end e2e-local
