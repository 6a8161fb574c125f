#!/usr/bin/env bash
# Runs the pod twin's scenarios (ci/e2e/podtwin/scenarios.py) against a chart and a socketless binary:
#   bash ci/e2e/podtwin/run.sh [--chart DIR] [--binary PATH] [scenario ...]
# Defaults: this tree's chart/socketless and target/debug/socketless (build it first, as yourself:
# cargo build --locked --bin socketless). Needs root for ip netns; re-runs itself through sudo -n.
set -euo pipefail
# shellcheck source=../../lib/lib.sh
source "$(dirname "$0")/../../lib/lib.sh"
need_venv
need_apt ip iproute2 setpriv util-linux node nodejs
reexec_as_root -- "$0" "$@"
python3 "$ROOT/ci/e2e/podtwin/test_twin.py" || die "the pod twin's unit tests failed"
exec python3 "$ROOT/ci/e2e/podtwin/scenarios.py" "$@"
