#!/usr/bin/env bash
# The full system in a real Kubernetes cluster: kind + LocalStack (DynamoDB) + the chart with
# the gateway on a NodePort, then `helm test`, a round trip through the NodePort, the session in
# LocalStack, and a scale-down from 3 to 1 backends under load with zero client errors.
#
# This needs a machine with a Docker engine and network access (kind, LocalStack and the KEDA
# CRDs are downloaded). It does not run where there is no Docker; ci/e2e-local.sh tests the same
# path with plain processes there, and ci/test.sh runs that one.
#
# Usage: bash ci/kind-e2e.sh        (KEEP_CLUSTER=1 leaves the cluster up for inspection)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

KIND_VERSION=v0.29.0
KUBECTL_VERSION=v1.33.1
HELM_VERSION=v3.18.3
KEDA_VERSION=2.17.2
LOCALSTACK_IMAGE=localstack/localstack:4.6.0
CLUSTER=socketless-e2e
NS=socketless
IMAGE=socketless:e2e
NODE_PORT=30081
BIN_DIR="$CACHE/bin"
mkdir -p "$BIN_DIR"
export PATH="$BIN_DIR:$PATH"

command -v docker >/dev/null && docker info >/dev/null 2>&1 || die "kind-e2e needs a running Docker engine (use ci/e2e-local.sh without one)"

fetch() { # NAME URL
  [ -x "$BIN_DIR/$1" ] && return 0
  log "downloading $1"
  curl -fsSL -o "$BIN_DIR/$1" "$2"
  chmod +x "$BIN_DIR/$1"
}
fetch kind "https://kind.sigs.k8s.io/dl/$KIND_VERSION/kind-linux-amd64"
fetch kubectl "https://dl.k8s.io/release/$KUBECTL_VERSION/bin/linux/amd64/kubectl"
if [ ! -x "$BIN_DIR/helm" ]; then
  curl -fsSL "https://get.helm.sh/helm-$HELM_VERSION-linux-amd64.tar.gz" | tar -xz -C "$BIN_DIR" --strip-components=1 linux-amd64/helm
fi

cleanup() {
  [ "${KEEP_CLUSTER:-0}" = 1 ] || kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
}
trap cleanup EXIT

log "kind cluster with the gateway's NodePort mapped to localhost:$NODE_PORT"
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
kind create cluster --name "$CLUSTER" --config "$CACHE/kind.yaml" --wait 120s

log "LocalStack (DynamoDB) in the cluster"
kubectl create namespace localstack
kubectl -n localstack create deployment localstack --image="$LOCALSTACK_IMAGE" --port=4566
kubectl -n localstack set env deployment/localstack SERVICES=dynamodb
kubectl -n localstack expose deployment localstack --port=4566
kubectl -n localstack rollout status deployment/localstack --timeout=180s

log "image"
docker build -f Dockerfile.scratch -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

log "KEDA CRDs"
kubectl apply --server-side -f "https://github.com/kedacore/keda/releases/download/v$KEDA_VERSION/keda-$KEDA_VERSION-crds.yaml"

log "the sessions table"
kubectl -n localstack run create-table --rm -i --restart=Never --image=amazon/aws-cli:2.27.0 \
  --env AWS_ACCESS_KEY_ID=test --env AWS_SECRET_ACCESS_KEY=test --env AWS_DEFAULT_REGION=us-east-1 -- \
  dynamodb create-table --endpoint-url http://localstack.localstack.svc:4566 --table-name socketless-sessions \
  --attribute-definitions AttributeName=connectionId,AttributeType=S --key-schema AttributeName=connectionId,KeyType=HASH \
  --billing-mode PAY_PER_REQUEST

log "helm install (gateway enabled, NodePort)"
helm install socketless chart/socketless -n "$NS" --create-namespace \
  -f chart/socketless/examples/kind-nodeport-gateway.yaml \
  --set image.repository=socketless --set image.tag=e2e --set image.pullPolicy=Never \
  --set gateway.service.nodePort=$NODE_PORT --wait --timeout 180s

log "helm test"
helm test socketless -n "$NS" --timeout 120s

log "a round trip through the NodePort"
cargo build --release --locked --bin socketless --example ws_load
BIN=target/release/socketless
URL="ws://127.0.0.1:$NODE_PORT/dev"
"$BIN" probe "$URL" --message hello --timeout 20s

log "the session is in LocalStack while a client is connected"
"$BIN" probe "$URL" --message hold --expect never --timeout 15s >/dev/null 2>&1 &
holder=$!
sleep 5
items=$(kubectl -n localstack run scan --rm -i --restart=Never --image=amazon/aws-cli:2.27.0 \
  --env AWS_ACCESS_KEY_ID=test --env AWS_SECRET_ACCESS_KEY=test --env AWS_DEFAULT_REGION=us-east-1 -- \
  dynamodb scan --endpoint-url http://localstack.localstack.svc:4566 --table-name socketless-sessions \
  --select COUNT --query Count --output text | head -1 | tr -dc '0-9')
wait "$holder" || true
[ "${items:-0}" -ge 1 ] || die "no session item in LocalStack while a client was connected"
echo "sessions in LocalStack: $items"

log "scale the backend from 3 to 1 while clients send"
kubectl -n "$NS" scale deployment/socketless --replicas=3
kubectl -n "$NS" rollout status deployment/socketless --timeout=120s
target/release/examples/ws_load "$URL" --clients 8 --duration 40s --warmup 0s >"$CACHE/kind-load.json" &
load=$!
sleep 10
kubectl -n "$NS" scale deployment/socketless --replicas=1
kubectl -n "$NS" rollout status deployment/socketless --timeout=120s
wait "$load"
cat "$CACHE/kind-load.json"
python3 - "$CACHE/kind-load.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["errors"] == 0, f"{r['errors']} client-visible errors during the scale-down"
assert r["sent"] == r["answered"] > 0, f"{r['answered']} of {r['sent']} answered"
print(f"scale-down 3 → 1: {r['sent']} messages, {r['answered']} answered, 0 errors")
PY
echo "kind-e2e: passed"
