#!/usr/bin/env bash
# `socketless conformance` against two local targets: `socketless gateway` (SigV4 checked on
# @connections) with `socketless serve --conformance` behind it, and `socketless dev
# --conformance`. Both start on free 127.0.0.1 ports with scaled timeouts (integration 1 s, idle
# 3 s, duration 6 s), which the kit is told. Against the gateway it also runs Node's AWS SDK v3
# (ci/checks/node-sdk/check-node-sdk.js) on @connections. Against `dev` the kit runs with --unsigned and an empty
# environment: no AWS credentials. Last, the gateway with the stack's `$connect` authorizer turned
# on (AuthorizerFunctionArn) and pointed at the example Python authorizer
# (examples/authorizer/python/authorizer.py, the Lambda Runtime Interface Emulator's endpoint):
# the whole kit with a token, and the `auth-*` cases (401 without a token, 403 denied, the
# principal on every call). Exits non-zero if any run fails.
set -euo pipefail
# shellcheck source=../lib/lib.sh
source "$(dirname "$0")/../lib/lib.sh"
cd "$ROOT"

cargo build --locked --quiet --bin socketless
BIN="$ROOT/target/debug/socketless"
KEY=AKIDCONFORMANCE
SECRET=conformance-sigv4-secret
SHARED=conformance-shared-secret-0123
STAGE=conf
TIMEOUTS=(--integration-timeout 1s --idle-timeout 3s)
KIT_TIMEOUTS=(--integration-timeout 1s --idle-timeout 3s --max-duration 6s --wait 5s)

logs="$(mktemp -d)"
pids=()
# shellcheck disable=SC2329 # invoked by the EXIT trap below
cleanup() {
  kill_pids "${pids[@]}"
  rm -rf "$logs"
}
trap cleanup EXIT

# The kit signs with the default credential chain: only these static keys.
kit() {
  env -u AWS_PROFILE -u AWS_SESSION_TOKEN AWS_ACCESS_KEY_ID="$KEY" AWS_SECRET_ACCESS_KEY="$SECRET" \
    AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null \
    AWS_SHARED_CREDENTIALS_FILE=/dev/null "$BIN" conformance "$@"
}

status=0

# Starts `serve --conformance` and a gateway in front of it (SigV4 on @connections); NAME names
# the logs, the rest are extra gateway flags. Sets GW_PORT.
start_target() {
  local name="$1"; shift
  local backend internal
  backend="$(free_port)"; internal="$(free_port)"; GW_PORT="$(free_port)"
  "$BIN" serve --conformance --listen "127.0.0.1:$backend" --internal-listen "127.0.0.1:$internal" \
    --shared-secret "$SHARED" --shutdown-delay 0s >"$logs/serve-$name.log" 2>&1 &
  pids+=($!)
  wait_port "$backend" "${pids[-1]}" || { cat "$logs/serve-$name.log"; die "serve --conformance did not start"; }
  "$BIN" gateway --listen "127.0.0.1:$GW_PORT" \
    --param "IntegrationUri=http://127.0.0.1:$backend" --param "SharedSecret=$SHARED" \
    --param "StageName=$STAGE" --param ConformanceMapping=true --param DisconnectContext=true \
    "${TIMEOUTS[@]}" --max-connection-duration 6s \
    --sigv4-access-key-id "$KEY" --sigv4-secret-access-key "$SECRET" --shutdown-delay 0s "$@" \
    >"$logs/gateway-$name.log" 2>&1 &
  pids+=($!)
  wait_port "$GW_PORT" "${pids[-1]}" || { cat "$logs/gateway-$name.log"; die "the gateway ($name) did not start"; }
}

log "conformance: socketless gateway + serve --conformance (SigV4 on)"
start_target plain
gw_port="$GW_PORT"
kit --url "ws://127.0.0.1:$gw_port/$STAGE" --connections "http://127.0.0.1:$gw_port/$STAGE" \
  "${KIT_TIMEOUTS[@]}" || status=1

log "Node AWS SDK v3 (@aws-sdk/client-apigatewaymanagementapi) against the gateway's @connections"
bash ci/checks/node-sdk/run.sh "127.0.0.1:$gw_port" "$STAGE" "$KEY" "$SECRET" || status=1

log "conformance: socketless dev --conformance"
dev_port="$(free_port)"; dev_internal="$(free_port)"
"$BIN" dev --conformance --listen "127.0.0.1:$dev_port" --internal-listen "127.0.0.1:$dev_internal" \
  --stage "$STAGE" "${TIMEOUTS[@]}" --max-connection-duration 6s >"$logs/dev.log" 2>&1 &
pids+=($!)
wait_port "$dev_port" "${pids[-1]}" || { cat "$logs/dev.log"; die "dev did not start"; }
# Unsigned: the kit needs no credentials at all, so it runs with an empty environment.
env -i HOME="$HOME" PATH="$PATH" "$BIN" conformance \
  --url "ws://127.0.0.1:$dev_port/$STAGE" --connections "http://127.0.0.1:$dev_port/$STAGE" \
  "${KIT_TIMEOUTS[@]}" --unsigned || status=1

log "conformance: socketless gateway with the stack's \$connect authorizer (examples/authorizer/python)"
auth_port="$(free_port)"
PORT="$auth_port" python3 examples/authorizer/python/authorizer.py >"$logs/authorizer.log" 2>&1 &
pids+=($!)
wait_port "$auth_port" "${pids[-1]}" || { cat "$logs/authorizer.log"; die "the example authorizer did not start"; }
start_target authorizer \
  --param "AuthorizerFunctionArn=arn:aws:lambda:us-east-1:123456789012:function:socketless-authorizer" \
  --authorizer "ConnectAuthorizer=http://127.0.0.1:$auth_port/2015-03-31/functions/function/invocations"
gw2="$GW_PORT"
kit --url "ws://127.0.0.1:$gw2/$STAGE" --connections "http://127.0.0.1:$gw2/$STAGE" "${KIT_TIMEOUTS[@]}" \
  --auth-token-allow alice-token-0123456789 --auth-token-deny not-a-known-token --auth-principal alice \
  || { tail -n 20 "$logs/gateway-authorizer.log" "$logs/authorizer.log"; status=1; }

exit "$status"
