#!/usr/bin/env bash
# Installs the pinned Node AWS SDK client (ci/checks/node-sdk/package.json and its lockfile) into
# .ci-cache/node-sdk and runs ci/checks/node-sdk/check-node-sdk.js against a running gateway.
# usage: run.sh HOST:PORT STAGE ACCESS_KEY_ID SECRET_ACCESS_KEY
set -euo pipefail
# shellcheck source=../../lib/lib.sh
source "$(dirname "$0")/../../lib/lib.sh"
need_npm "$ROOT/ci/checks/node-sdk" "$CACHE/node-sdk"
NODE_PATH="$CACHE/node-sdk/node_modules" exec node "$ROOT/ci/checks/node-sdk/check-node-sdk.js" "$@"
