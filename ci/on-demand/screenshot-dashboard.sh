#!/usr/bin/env bash
# A screenshot of the chart's dashboard without Grafana (docs/img/dashboard.png): `socketless
# gateway` and `serve` under about 75 s of load, a local Prometheus (Debian's package) scraping
# them, the dashboard's queries drawn as charts in one page, headless Chromium taking the picture.
# See ci/on-demand/screenshot-dashboard.py. Run on demand, not part of ci/test.sh.
set -euo pipefail
# shellcheck source=../lib/lib.sh
source "$(dirname "$0")/../lib/lib.sh"
cd "$ROOT"

need_apt prometheus prometheus chromium chromium
log "building: the release binary and the load tools"
cargo build --locked --quiet --release --bin socketless
cargo build --locked --quiet --profile loadgen --example ws_load --example ws_connect
timeout 600 python3 ci/on-demand/screenshot-dashboard.py "$ROOT/target/release/socketless" \
  "$ROOT/target/loadgen/examples" "$ROOT/docs/img/dashboard.png"
