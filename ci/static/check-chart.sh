#!/usr/bin/env bash
# Chart tests (ci/static/check-chart.py) with the pinned Python tools from ci/requirements.txt.
set -euo pipefail
# shellcheck source=../lib/lib.sh
source "$(dirname "$0")/../lib/lib.sh"
need_venv
exec python "$ROOT/ci/static/check-chart.py"
