#!/usr/bin/env bash
# Installs the pinned Node AWS SDK client (ci/node-sdk/package-lock.json) into
# ci/node-sdk/node_modules and runs ci/check-node-sdk.js against a running gateway.
# usage: run.sh HOST:PORT STAGE ACCESS_KEY_ID SECRET_ACCESS_KEY
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$ROOT/ci/node-sdk"
need_apt node nodejs npm npm
if ! cmp -s package-lock.json node_modules/.installed-lock.json 2>/dev/null; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.installed-lock.json
fi
exec node "$ROOT/ci/check-node-sdk.js" "$@"
