#!/usr/bin/env bash
# Sets the version everywhere it appears: Cargo.toml (and Cargo.lock), the chart's version and
# appVersion, the Dockerfile's VERSION default and the example image tags.
# Usage: ci/on-demand/bump-version.sh 0.2.0
set -euo pipefail
# shellcheck source=../lib/lib.sh
source "$(dirname "$0")/../lib/lib.sh"
cd "$ROOT"
new="${1:?usage: ci/on-demand/bump-version.sh X.Y.Z}"
[[ "$new" =~ ^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || die "$new is not a semantic version"
old=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
sed -i "0,/^version = \"$old\"/s//version = \"$new\"/" Cargo.toml
sed -i "s/^version: .*/version: $new/; s/^appVersion: .*/appVersion: \"$new\"/" chart/socketless/Chart.yaml
sed -i "s/^ARG VERSION=.*/ARG VERSION=$new/; s/socketless:$old/socketless:$new/g" Dockerfile.scratch
sed -i "s/tag: \"$old\"/tag: \"$new\"/" chart/socketless/examples/*.yaml
sed -i "s/socketless:$old/socketless:$new/g" README.md docs/*.md
cargo update --workspace --offline >/dev/null 2>&1 || cargo update --workspace >/dev/null
echo "version: $old → $new"
