#!/usr/bin/env bash
# cfn-lint on the CloudFormation template, clean (no errors, no warnings), plus the project's
# custom rules (ci/static/cfn-rules.txt), which catch what cfn-lint's bundled schemas miss: a wrong
# ProtocolType or IntegrationType on ApiGatewayV2, or a JWT authorizer on a WebSocket API. Then
# it proves the custom rules bite, on mutated copies of the template. Last,
# ci/static/check-cfn.py checks what neither can (least-privilege grants, the SharedSecret,
# OidcIssuer and AuthorizerFunctionArn patterns against real values, the KEDA role, the
# parameters the local gateway needs, the $connect authorizer off by default and complete when
# on), with its own mutations. cfn-lint comes from the tool venv
# (ci/requirements.txt), installed on first use.
set -euo pipefail
# shellcheck source=../lib/lib.sh
source "$(dirname "$0")/../lib/lib.sh"
cd "$ROOT"
need_venv

template=cfn/websocket-api.yml
rules=ci/static/cfn-rules.txt
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if out=$(cfn-lint --custom-rules "$rules" -- "$template" 2>&1); then
  ok "cfn-lint $template: clean"
else
  echo "$out"
  bad "cfn-lint $template"
fi

# Each mutation must be caught, by the named custom rule message.
mutate() {
  local name="$1" from="$2" to="$3" expect="$4"
  local file="$tmp/$name.yml"
  sed "s/$from/$to/" "$template" >"$file"
  if cmp -s "$file" "$template"; then
    bad "$name: the mutation did not apply"
    return
  fi
  local out rc=0
  out=$(cfn-lint --custom-rules "$rules" -- "$file" 2>&1) || rc=$?
  if [ "$rc" -ne 0 ] && grep -qF "$expect" <<<"$out"; then
    ok "$name is rejected: $expect"
  else
    echo "$out"
    bad "$name was not rejected with \"$expect\""
  fi
}
mutate protocol-http "ProtocolType: WEBSOCKET" "ProtocolType: HTTP" "ProtocolType must be WEBSOCKET"
mutate integration-lambda "IntegrationType: HTTP_PROXY" "IntegrationType: LAMBDA" "IntegrationType must be one of"
mutate integration-aws-proxy "IntegrationType: HTTP_PROXY" "IntegrationType: AWS_PROXY" "integrations are HTTP_PROXY"
mutate method-get "IntegrationMethod: POST" "IntegrationMethod: GET" "call the backend with POST"
mutate authorizer-jwt "AuthorizerType: REQUEST" "AuthorizerType: JWT" "REQUEST authorizers only"

if out=$(python "$ROOT/ci/static/check-cfn.py" 2>&1); then
  ok "ci/static/check-cfn.py: $(tail -n 1 <<<"$out")"
else
  echo "$out"
  bad "ci/static/check-cfn.py"
fi

tally_end cfn
