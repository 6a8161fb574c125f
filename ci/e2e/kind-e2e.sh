#!/usr/bin/env bash
# The full system in a real Kubernetes cluster: kind + DynamoDB + KEDA + the chart, with two
# gateways on a NodePort and replies through @connections. It checks, in order:
#   - KEDA's ScaledObject is Ready and KEDA raises the backend from 1 to 3 replicas (cron trigger);
#   - `helm test` (a probe pod through the gateway's Service), with the test pod's logs;
#   - round trips through the NodePort, each on a new connection, so both gateways get clients
#     and each push must find its client wherever it is connected;
#   - the gateway's pod template: peers by name pattern, the shared secret from its Secret, none
#     in argv; scaling the gateways from 2 to 3 keeps the running replicas (same revision, same
#     pods) and round trips still work;
#   - a session item in DynamoDB while a client is connected (polled, not a fixed sleep);
#   - KEDA scaling the backend from 3 to 1 while clients send: zero client-visible errors.
# On any failure it prints the pods, events, a description of every pod that is not ready and
# the logs of the backend, the gateways, DynamoDB and KEDA before it deletes the cluster.
#
# DynamoDB: DYNAMODB=dynamodb-local (default; amazon/dynamodb-local, no account or token) or
# DYNAMODB=localstack (LocalStack 4.4.0, the token-free line). Manifests: ci/fixtures/kind/*.yaml.
#
# The static musl binary is built once, here, and the image is Dockerfile.scratch's
# runtime-prebuilt stage around it (as ci/checks/check-image.sh does); the host-side load generator
# uses the loadgen profile.
#
# This needs a Docker engine and network access (kind, kubectl, helm, KEDA and the images are
# downloaded). Without Docker, ci/e2e/e2e-local.sh tests the same path with plain processes, and
# ci/test.sh runs that one.
#
# Usage: bash ci/e2e/kind-e2e.sh      KEEP_CLUSTER=1 leaves the cluster up (kind delete cluster
#                                 --name socketless-e2e removes it); DYNAMODB=localstack.
set -euo pipefail
# shellcheck source=../lib/lib.sh
source "$(dirname "$0")/../lib/lib.sh"
cd "$ROOT"

KIND_VERSION=v0.29.0
KUBECTL_VERSION=v1.33.1
HELM_VERSION=v3.18.3
KEDA_VERSION=2.17.2
AWS_CLI_IMAGE=amazon/aws-cli:2.27.0
DYNAMODB="${DYNAMODB:-dynamodb-local}"
CLUSTER=socketless-e2e
NS=socketless
RELEASE=socketless
IMAGE=socketless:e2e
NODE_PORT=30081
URL="ws://127.0.0.1:$NODE_PORT/dev"
BIN_DIR="$CACHE/bin"
mkdir -p "$BIN_DIR"
export PATH="$BIN_DIR:$PATH"

case "$DYNAMODB" in
  dynamodb-local | localstack) ;;
  *) die "DYNAMODB must be dynamodb-local or localstack, not '$DYNAMODB'" ;;
esac
if ! command -v docker >/dev/null || ! docker info >/dev/null 2>&1; then
  die "kind-e2e needs a running Docker engine (use ci/e2e/e2e-local.sh without one)"
fi

# ---- failure handling: diagnostics first, then the cluster is deleted ----
phase="setup"
cluster_up=0
bg_pids=()
step() {
  phase="$*"
  log "$*"
}

# Runs a command and never fails; for the diagnostics only.
show() {
  printf '\n--- %s\n' "$*"
  "$@" 2>&1 || true
}

dump() {
  set +e
  printf '\n==================== diagnostics ====================\n'
  show kubectl get nodes -o wide
  show kubectl get pods -A -o wide
  show kubectl get deploy,svc,endpoints,hpa,pdb -n "$NS" -o wide
  show kubectl get scaledobjects,triggerauthentications -n "$NS" -o wide
  show kubectl describe scaledobjects -n "$NS"
  show kubectl describe hpa -n "$NS"
  local events
  events=$(kubectl get events -A --sort-by=.lastTimestamp 2>&1)
  printf '\n--- events (last 150)\n%s\n' "$(tail -n 150 <<<"$events")"
  # Every pod that is not Running with all containers ready (or Succeeded), described.
  local pods line ns name ready status
  pods=$(kubectl get pods -A --no-headers 2>/dev/null)
  while read -r line; do
    [ -n "$line" ] || continue
    read -r ns name ready status _ <<<"$line"
    if [ "$status" = Completed ] || { [ "$status" = Running ] && [ "${ready%/*}" = "${ready#*/}" ]; }; then
      continue
    fi
    show kubectl describe pod -n "$ns" "$name"
  done <<<"$pods"
  # Logs of every component: each pod in the release's namespace (backends, gateways, the helm
  # test pod), DynamoDB, and KEDA; the previous container too where one restarted.
  local pod
  for ns in "$NS" dynamodb keda; do
    for pod in $(kubectl get pods -n "$ns" -o name 2>/dev/null); do
      show kubectl logs -n "$ns" "$pod" --all-containers --tail=300 --timestamps
      if kubectl logs -n "$ns" "$pod" --all-containers --previous --tail=1 >/dev/null 2>&1; then
        show kubectl logs -n "$ns" "$pod" --all-containers --previous --tail=300 --timestamps
      fi
    done
  done
  show helm status "$RELEASE" -n "$NS"
  printf '\n==================== end of diagnostics ====================\n'
}

on_exit() {
  local rc=$?
  trap - EXIT
  local pid
  for pid in "${bg_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "$rc" -ne 0 ]; then
    printf '\nkind-e2e: FAILED during "%s" (exit code %s)\n' "$phase" "$rc" >&2
    [ "$cluster_up" = 1 ] && dump
  fi
  if [ "$cluster_up" = 1 ]; then
    if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
      echo "KEEP_CLUSTER=1: the cluster $CLUSTER is still up (kind delete cluster --name $CLUSTER)"
    else
      kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    fi
  fi
  [ "$rc" -eq 0 ] || printf 'kind-e2e: FAILED during "%s"\n' "$phase" >&2
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# Polls a command every 2 s until it succeeds: wait_until SECONDS DESCRIPTION COMMAND...
wait_until() {
  local timeout="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${timeout}s waiting for: $what"
    sleep 2
  done
}

# ---- tools ----
step "tools: kind $KIND_VERSION, kubectl $KUBECTL_VERSION, helm $HELM_VERSION"
fetch_tool() { # NAME URL
  [ -x "$BIN_DIR/$1" ] && return 0
  curl -fsSL --retry 3 -o "$BIN_DIR/$1.part" "$2"
  chmod +x "$BIN_DIR/$1.part"
  mv "$BIN_DIR/$1.part" "$BIN_DIR/$1"
}
fetch_tool kind "https://kind.sigs.k8s.io/dl/$KIND_VERSION/kind-linux-amd64"
fetch_tool kubectl "https://dl.k8s.io/release/$KUBECTL_VERSION/bin/linux/amd64/kubectl"
if [ ! -x "$BIN_DIR/helm" ]; then
  curl -fsSL --retry 3 -o "$CACHE/helm.tar.gz" "https://get.helm.sh/helm-$HELM_VERSION-linux-amd64.tar.gz"
  tar -xzf "$CACHE/helm.tar.gz" -C "$BIN_DIR" --strip-components=1 linux-amd64/helm
  rm -f "$CACHE/helm.tar.gz"
fi

# ---- build once: the static binary, its image, the load generator ----
step "the static binary (release profile, once) and the load generator (loadgen profile)"
bin="$(build_static)"
cargo build --locked --quiet --profile loadgen --example ws_load
ws_load="$ROOT/target/loadgen/examples/ws_load"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

step "image $IMAGE: Dockerfile.scratch --target runtime-prebuilt around that binary"
ctx="$(mktemp -d)"
mkdir -p "$ctx/prebuilt"
cp "$bin" "$ctx/prebuilt/socketless"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/prebuilt/ca-certificates.crt"
docker build -q -f Dockerfile.scratch --target runtime-prebuilt --build-arg VERSION="$version" -t "$IMAGE" "$ctx"
rm -rf "$ctx"

# ---- cluster ----
step "kind cluster with the gateway's NodePort mapped to 127.0.0.1:$NODE_PORT"
kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
cat >"$CACHE/kind.yaml" <<KIND
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
    extraPortMappings:
      - containerPort: $NODE_PORT
        hostPort: $NODE_PORT
        listenAddress: 127.0.0.1
KIND
cluster_up=1
kind create cluster --name "$CLUSTER" --config "$CACHE/kind.yaml" --wait 120s
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "DynamoDB ($DYNAMODB, ci/fixtures/kind/$DYNAMODB.yaml); rollout status waits for its readiness probe"
kubectl apply -f "ci/fixtures/kind/$DYNAMODB.yaml"
kubectl -n dynamodb rollout status deployment/dynamodb --timeout=300s

step "KEDA $KEDA_VERSION (operator, metrics API server, admission webhooks)"
kubectl apply --server-side -f "https://github.com/kedacore/keda/releases/download/v$KEDA_VERSION/keda-$KEDA_VERSION.yaml"
for d in keda-operator keda-operator-metrics-apiserver keda-admission-webhooks; do
  kubectl -n keda rollout status "deployment/$d" --timeout=300s
done
kubectl wait --for=condition=Available apiservice/v1beta1.external.metrics.k8s.io --timeout=180s

step "the sessions and group-membership tables, through an aws-cli pod next to DynamoDB"
kubectl -n dynamodb run aws --image="$AWS_CLI_IMAGE" --restart=Never \
  --env AWS_ACCESS_KEY_ID=test --env AWS_SECRET_ACCESS_KEY=test --env AWS_DEFAULT_REGION=us-east-1 \
  --command -- sleep 3600
kubectl -n dynamodb wait --for=condition=Ready pod/aws --timeout=180s
ddb() {
  kubectl -n dynamodb exec aws -- aws --endpoint-url http://dynamodb.dynamodb.svc:8000 dynamodb "$@"
}
create_table() {
  ddb describe-table --table-name socketless-sessions >/dev/null 2>&1 && return 0
  ddb create-table --table-name socketless-sessions \
    --attribute-definitions AttributeName=connectionId,AttributeType=S \
    --key-schema AttributeName=connectionId,KeyType=HASH --billing-mode PAY_PER_REQUEST >/dev/null
}
# The memberships table as cfn/websocket-api.yml makes it (the chart's default name).
create_groups_table() {
  ddb describe-table --table-name socketless-sessions-groups >/dev/null 2>&1 && return 0
  ddb create-table --table-name socketless-sessions-groups \
    --attribute-definitions AttributeName=group,AttributeType=S AttributeName=connectionId,AttributeType=S \
    --key-schema AttributeName=group,KeyType=HASH AttributeName=connectionId,KeyType=RANGE \
    --global-secondary-indexes '[{"IndexName":"byConnection","KeySchema":[{"AttributeName":"connectionId","KeyType":"HASH"},{"AttributeName":"group","KeyType":"RANGE"}],"Projection":{"ProjectionType":"KEYS_ONLY"}}]' \
    --billing-mode PAY_PER_REQUEST >/dev/null
}
# LocalStack installs its DynamoDB at the first call, so the first calls may fail.
wait_until 180 "the sessions table to be created" create_table
ddb wait table-exists --table-name socketless-sessions
create_groups_table
ddb wait table-exists --table-name socketless-sessions-groups

step "helm install: two gateways on the NodePort, async replies, KEDA with a cron trigger"
helm install "$RELEASE" chart/socketless -n "$NS" --create-namespace \
  -f chart/socketless/examples/kind-nodeport-gateway.yaml -f ci/fixtures/kind/values.yaml \
  --set image.repository=socketless --set image.tag=e2e --set image.pullPolicy=Never \
  --set gateway.service.nodePort="$NODE_PORT" --wait --timeout 300s

step "KEDA: the ScaledObject is Ready and KEDA raises the backend from 1 to 3"
kubectl -n "$NS" wait --for=condition=Ready "scaledobject/$RELEASE" --timeout=180s
ready_replicas() { # KIND/NAME N: N replicas wanted, N ready, nothing else left
  local out
  out=$(kubectl -n "$NS" get "$1" \
    -o jsonpath='{.spec.replicas} {.status.replicas} {.status.readyReplicas} {.status.updatedReplicas}') || return 1
  [ "$out" = "$2 $2 $2 $2" ]
}
wait_until 180 "3 ready backend replicas (KEDA's cron trigger)" ready_replicas "deployment/$RELEASE" 3
wait_until 120 "2 ready gateway replicas" ready_replicas "statefulset/$RELEASE-gateway" 2
echo "KEDA scaled deployment/$RELEASE to 3; gateways: 2"

step "helm test (its pod's logs included)"
helm test "$RELEASE" -n "$NS" --timeout 180s --logs

step "round trips through the NodePort, each on a new connection (pushes reach either gateway)"
for i in $(seq 1 12); do
  "$bin" probe "$URL" --message "hello-$i" --timeout 20s >/dev/null \
    || die "round trip $i through $URL failed (a push did not reach its client)"
done
echo "12 round trips through two gateways with async replies: ok"

step "the gateway's pod template: peers by name pattern, the shared secret from its Secret, not in argv"
tmpl=$(kubectl -n "$NS" get "statefulset/$RELEASE-gateway" \
  -o jsonpath='{.spec.template.spec.containers[0].args} {range .spec.template.spec.containers[0].env[*]}{.name}={.value} {end}')
grep -qF "SOCKETLESS_GATEWAY_PEER_URL_TEMPLATE=http://$RELEASE-gateway-{ordinal}." <<<"$tmpl" \
  || die "the gateway has no SOCKETLESS_GATEWAY_PEER_URL_TEMPLATE: $tmpl"
grep -qF "SOCKETLESS_GATEWAY_PARAM_SharedSecret=" <<<"$tmpl" || die "the gateway gets no SOCKETLESS_GATEWAY_PARAM_SharedSecret: $tmpl"
if grep -qE 'SharedSecret=[^ ]|SOCKETLESS_GATEWAY_PEERS=' <<<"$tmpl"; then
  die "a secret value in the gateway's args or env, or the old peer list: $tmpl"
fi

step "scaling the gateways 2 -> 3 changes only spec.replicas: the running replicas keep their clients"
uids_before=$(kubectl -n "$NS" get pod "$RELEASE-gateway-0" "$RELEASE-gateway-1" -o jsonpath='{.items[*].metadata.uid}')
rev_before=$(kubectl -n "$NS" get "statefulset/$RELEASE-gateway" -o jsonpath='{.status.updateRevision}')
helm upgrade "$RELEASE" chart/socketless -n "$NS" --reuse-values --set gateway.replicaCount=3 --wait --timeout 300s
wait_until 120 "3 ready gateway replicas" ready_replicas "statefulset/$RELEASE-gateway" 3
uids_after=$(kubectl -n "$NS" get pod "$RELEASE-gateway-0" "$RELEASE-gateway-1" -o jsonpath='{.items[*].metadata.uid}')
rev_after=$(kubectl -n "$NS" get "statefulset/$RELEASE-gateway" -o jsonpath='{.status.updateRevision}')
[ "$rev_before" = "$rev_after" ] || die "the gateway's revision changed with its replica count ($rev_before -> $rev_after)"
[ "$uids_before" = "$uids_after" ] || die "gateway-0 or gateway-1 was restarted by a new replica count"
for i in $(seq 1 6); do
  "$bin" probe "$URL" --message "three-$i" --timeout 20s >/dev/null \
    || die "round trip $i through three gateways failed"
done
echo "3 gateways, the first two untouched (revision $rev_after), 6 round trips: ok"

step "the session is in DynamoDB while a client is connected"
"$bin" probe "$URL" --message hold --expect never --timeout 120s >/dev/null 2>&1 &
holder=$!
bg_pids+=("$holder")
session_items() {
  local out
  out=$(ddb scan --table-name socketless-sessions --select COUNT --query Count --output text 2>&1) || return 1
  out=$(tr -dc '0-9' <<<"$out")
  items="${out:-0}"
  [ "$items" -ge 1 ]
}
items=0
wait_until 90 "a session item in DynamoDB while a client is connected" session_items
kill "$holder" 2>/dev/null || true
wait "$holder" 2>/dev/null || true
echo "sessions in DynamoDB: $items"

step "KEDA scales the backend from 3 to 1 while clients send"
load_out="$CACHE/kind-load.json"
"$ws_load" "$URL" --clients 8 --duration 60s --warmup 0s >"$load_out" &
load=$!
bg_pids+=("$load")
sleep 10
# paused-replicas: KEDA scales the target to this count and holds it there.
kubectl -n "$NS" annotate "scaledobject/$RELEASE" autoscaling.keda.sh/paused-replicas=1 --overwrite
wait_until 120 "KEDA to scale the backend to 1 ready replica" ready_replicas "deployment/$RELEASE" 1
wait "$load" || die "the load generator failed"
cat "$load_out"
python3 - "$load_out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["errors"] == 0, f"{r['errors']} client-visible errors during the scale-down"
assert r["sent"] == r["answered"] > 0, f"{r['answered']} of {r['sent']} answered"
print(f"scale-down 3 -> 1 by KEDA: {r['sent']} messages, {r['answered']} answered, 0 errors")
PY
phase="done"
echo "kind-e2e: passed"
