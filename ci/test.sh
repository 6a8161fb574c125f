#!/usr/bin/env bash
# The project's test command: formatting, lints, every test suite, the template checks and the
# static build. It installs what it needs (Debian packages, a Python tool venv, the musl target)
# and starts the servers the tests use itself. Run it from anywhere: bash ci/test.sh
set -euo pipefail
# shellcheck source=lib/lib.sh
source "$(dirname "$0")/lib/lib.sh"
cd "$ROOT"

# Runs one step and counts it in the tally (ci/lib/lib.sh): step NAME COMMAND...
step() {
  local name="$1"; shift
  log "$name"
  if "$@"; then ok "$name"; else bad "$name"; fi
}

need_venv
python3 -c "import moto.server" || die "python3 cannot import moto.server after installing ci/requirements.txt"
command -v cfn-lint >/dev/null || die "cfn-lint missing after installing ci/requirements.txt"

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy -D warnings" cargo clippy --locked --all-targets -- -D warnings
step "cargo test" cargo test --locked
licenses_and_bans() {
  command -v cargo-deny >/dev/null || cargo install --locked cargo-deny --version 0.18.3 || return 1
  # cargo deny reads the metadata of every platform's dependencies (Windows-only crates
  # included), so fetch them all first; the check itself then runs offline.
  cargo fetch --locked || return 1
  cargo deny --offline check licenses bans
}
step "licenses and duplicate dependencies (cargo deny)" licenses_and_bans
step "cfn-lint + custom rules" bash ci/static/check-cfn.sh
step "Helm chart" bash ci/static/check-chart.sh
step "dashboard and alerts: promtool rule tests, every queried metric exported by the binary" bash ci/static/check-observability.sh target/debug/socketless
step "static checks (actionlint, shellcheck, checkov)" bash ci/static/check-static.sh
step "boto3 against @connections" python3 ci/checks/check-boto3.py target/debug/socketless
step "conformance suite against gateway and dev; Node AWS SDK v3 against @connections" bash ci/checks/check-conformance.sh
browser() {
  need_apt chromium chromium
  python3 ci/checks/check-browser.py target/debug/socketless
}
step "headless Chromium against dev: round trip, a clean close, tokens by ?token= and by subprotocol" browser
step "example apps (Python, Node) through gateway → serve --upstream → app" python3 ci/checks/check-examples.py target/debug/socketless
graphql() {
  need_apt chromium chromium node nodejs npm npm
  python3 ci/checks/check-graphql.py target/debug/socketless
}
step "GraphQL subscriptions (graphql-ws) in Node and Chromium through gateway → serve --upstream → app" graphql
authorizer_examples() {
  python3 -m unittest discover -s examples/authorizer/python || return 1
  node --test examples/authorizer/node/authorizer.test.js
}
step "example authorizer functions (Python, Node): allow, deny, missing token, the RIE endpoint" authorizer_examples
step "who is connecting with a Python app: principal and attributes on 1,000 messages over two serve processes, 0 DynamoDB calls" python3 ci/checks/check-identity.py target/debug/socketless
live_page() {
  need_apt chromium chromium
  cargo build --locked --example ws_members || return 1
  python3 ci/checks/check-live.py target/debug/socketless target/debug/examples
}
step "who is connected: 30,000 connections over 3 gateways listed in pages of 1,000, each once; the live page in headless Chromium (screenshots in target/ci-artifacts/)" live_page
step "groups: a publish to 900 members over 3 gateways and 2 serve in ≤ 3 calls, each member once; pruning; serve SIGKILLed mid-publish; hostile calls" python3 ci/checks/check-groups.py target/debug/socketless
step "/disconnect at least once: 3 gateways × 1,000 clients, one SIGKILLed; 2,000 handshake resets; serve SIGKILLed mid-/disconnect; the app 500 for 10 s" python3 ci/checks/check-disconnect.py target/debug/socketless
resume() {
  need_apt chromium chromium node nodejs npm npm
  python3 ci/checks/check-resume.py target/debug/socketless
}
step "resumable sessions: a raw client through 100 cuts, the reference client (≤ 3 KB gzipped) in Node and Chromium through 20 each; every push in order, once" resume

static_check() {
  local bin
  bin="$(build_static)" || return 1
  [ -x "$bin" ] || { echo "no binary at $bin"; return 1; }
  if readelf -l "$bin" | grep -q 'program interpreter'; then
    echo "not a static binary: $bin"; return 1
  fi
  "$bin" --version || return 1
  echo "static stripped binary: $(stat -c %s "$bin") bytes"
  # It must run from an empty root filesystem (no /etc, no libc) as a non-root uid.
  local root
  root="$(mktemp -d)"
  cp "$bin" "$root/socketless"
  bash ci/checks/check-rootfs.sh "$root" /socketless || { rm -rf "$root"; return 1; }
  rm -rf "$root"
}
step "the gateway's memory under hostile clients (held fragments, slow consumers)" python3 ci/checks/check-memory.py target/debug/socketless
step "full path with processes (gateway → ALB twin → 3 × serve → moto; then 3 gateways)" bash ci/e2e/e2e-local.sh
pod_twin() {
  cargo build --locked --quiet --bin socketless || return 1
  bash ci/e2e/podtwin/run.sh
}
step "pod twin: the chart's manifests run as pods (ready, app sidecar, gateway scale, backend-only change)" pod_twin
step "static musl build" static_check
step "scratch image" bash ci/checks/check-image.sh

echo
tally_end steps
