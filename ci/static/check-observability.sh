#!/usr/bin/env bash
# The chart's Grafana dashboard and PrometheusRule against promtool and the real binary
# (ci/static/check-observability.py). Installs promtool (Debian's prometheus package) and the
# pinned Python tools. Usage: check-observability.sh [BINARY] (default: target/debug/socketless,
# built when missing).
set -euo pipefail
# shellcheck source=../lib/lib.sh
source "$(dirname "$0")/../lib/lib.sh"
need_venv
need_apt promtool prometheus
bin="${1:-$ROOT/target/debug/socketless}"
if [ ! -x "$bin" ]; then
  (cd "$ROOT" && cargo build --locked --quiet --bin socketless) || die "cargo build failed"
fi
exec python "$ROOT/ci/static/check-observability.py" "$bin"
