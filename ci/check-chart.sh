#!/usr/bin/env bash
# Chart tests (ci/check-chart.py) with the pinned Python tools from ci/requirements.txt.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
need_venv
exec python "$ROOT/ci/check-chart.py"
