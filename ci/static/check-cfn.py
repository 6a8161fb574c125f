#!/usr/bin/env python3
"""Checks on cfn/websocket-api.yml that cfn-lint cannot make: least-privilege grants, the
SharedSecret and OidcIssuer patterns against concrete values, the KEDA role, the parameters the
local gateway needs. Then it proves the checks bite: each mutation below puts back an older,
wrong version of one part of the template and must fail the named check.
Prints `cfn-py: N passed, N failed`.
"""
import os
import re
import sys

import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from checklib import Tally  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATE = os.path.join(ROOT, "cfn", "websocket-api.yml")


class Loader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Sub, !If, ...) as their long forms."""


def _tag(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


Loader.add_multi_constructor("!", _tag)

SECRET_OK = ["0123456789abcdef0123456789abcdef0123456789abcdef",  # openssl rand -hex 24
             "AZaz09!#$%&()*+-./:;<=>?@[]^_{|}~", "e2e-local-shared-secret-0123"]
SECRET_BAD = {"'": "a quote ends the RequestParameters literal", ",": "a comma splits SOCKETLESS_GATEWAY_PARAMS",
              " ": "space", '"': "double quote", "\\": "backslash", "`": "backtick"}
OIDC_OK = ["", "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE",
           "oidc.eks.cn-north-1.amazonaws.com.cn/id/0123456789ABCDEF"]
OIDC_BAD = ["https://oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE",
            "oidc.eks.us-east-1.amazonaws.com", "oidc.example.com/id/X"]
# What `socketless gateway` can emulate; other ApiGatewayV2 types or properties stop it.
GATEWAY_TYPES = {"AWS::ApiGatewayV2::Api", "AWS::ApiGatewayV2::Integration", "AWS::ApiGatewayV2::Route",
                 "AWS::ApiGatewayV2::RouteResponse", "AWS::ApiGatewayV2::Stage", "AWS::ApiGatewayV2::Deployment"}


def matches(pattern, value, min_length=0):
    """CloudFormation checks AllowedPattern against the whole value (Java regex; these patterns
    mean the same in Python's re)."""
    return len(value) >= min_length and re.fullmatch(pattern, value) is not None


def statements(role):
    for policy in role["Properties"].get("Policies", []):
        yield from policy["PolicyDocument"]["Statement"]


def as_text(value):
    """A Resource entry as text ({"Fn::Sub": "..."} or a plain string)."""
    return value.get("Fn::Sub", "") if isinstance(value, dict) else value


def checks(t):
    """{check name: (ok, detail)} for one parsed template."""
    out = {}
    params, res = t["Parameters"], t["Resources"]
    backend = {s["Sid"]: s for s in statements(res["BackendRole"])}
    grants = [as_text(r) for r in backend["ManageConnections"]["Resource"]]
    out["@connections: only POST and DELETE are granted"] = (
        sorted(g.split("/")[-3] for g in grants) == ["DELETE", "POST"], grants)
    actions = sorted(backend["Sessions"]["Action"])
    out["DynamoDB: only the store's calls (no DescribeTable)"] = (
        actions == sorted(["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Scan"]), actions)

    sp = params["SharedSecret"]
    pattern, minimum = sp.get("AllowedPattern", ".*"), sp.get("MinLength", 0)
    bad = [ch for ch in SECRET_BAD if matches(pattern, "abcdefghijklmnop" + ch, minimum)]
    out["SharedSecret refuses space \" ' , \\ and backtick"] = (not bad, f"accepted: {bad}")
    out["SharedSecret needs 16 characters"] = (not matches(pattern, "a" * 15, minimum), pattern)
    out["SharedSecret accepts every allowed character"] = (all(matches(pattern, v, minimum) for v in SECRET_OK), pattern)

    op = params["OidcIssuer"].get("AllowedPattern", ".*")
    out["OidcIssuer accepts empty, aws and aws-cn issuers"] = (all(matches(op, v) for v in OIDC_OK), op)
    out["OidcIssuer refuses https:// and malformed issuers"] = (not any(matches(op, v) for v in OIDC_BAD), op)

    keda = res.get("KedaRole", {})
    kst = list(statements(keda)) if keda else []
    out["KEDA role grants cloudwatch:GetMetricData on * (no resource-level support)"] = (
        any(s.get("Action") in ("cloudwatch:GetMetricData", ["cloudwatch:GetMetricData"]) and s.get("Resource") == "*" for s in kst), kst)
    trust = str(keda.get("Properties", {}).get("AssumeRolePolicyDocument", ""))
    out["KEDA role trusts KEDA's service account (IRSA) and Pod Identity"] = (
        "system:serviceaccount:${KedaNamespace}:${KedaServiceAccountName}" in trust and "pods.eks.amazonaws.com" in trust, trust[:200])
    out["KEDA defaults: keda/keda-operator, role optional, KedaRoleArn output"] = (
        params.get("KedaNamespace", {}).get("Default") == "keda"
        and params.get("KedaServiceAccountName", {}).get("Default") == "keda-operator"
        and keda.get("Condition") and "KedaRoleArn" in t.get("Outputs", {}), "")

    table = res.get("SessionsTable", {})
    out["the sessions table: deletion protection, DeletionPolicy and UpdateReplacePolicy Retain"] = (
        table.get("Properties", {}).get("DeletionProtectionEnabled") is True
        and table.get("DeletionPolicy") == "Retain" and table.get("UpdateReplacePolicy") == "Retain",
        {k: table.get(k) for k in ("DeletionPolicy", "UpdateReplacePolicy")})

    account = [r for r in res.values() if r["Type"] == "AWS::ApiGateway::Account"]
    out["the account's API Gateway CloudWatch role can be set (optional)"] = (
        len(account) == 1 and account[0].get("Condition") and "CloudWatchRoleArn" in account[0]["Properties"], account)

    no_default = sorted(k for k, v in params.items() if "Default" not in v)
    out["every parameter but IntegrationUri and SharedSecret has a Default (the local gateway needs it)"] = (
        no_default == ["IntegrationUri", "SharedSecret"], no_default)
    bad_defaults = [k for k, v in params.items() if "Default" in v and "AllowedPattern" in v and not matches(v["AllowedPattern"], str(v["Default"]))]
    out["every Default matches its AllowedPattern"] = (not bad_defaults, bad_defaults)
    v2 = sorted({r["Type"] for r in res.values() if r["Type"].startswith("AWS::ApiGatewayV2::")} - GATEWAY_TYPES)
    out["only ApiGatewayV2 types socketless gateway emulates"] = (not v2, v2)
    return out


# Each mutation restores an older, wrong text and must fail the named check.
MUTATIONS = {
    "GET on @connections granted again": (
        '                  - !Sub "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${Api}/${StageName}/DELETE/@connections/*"\n',
        '                  - !Sub "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${Api}/${StageName}/GET/@connections/*"\n'
        '                  - !Sub "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${Api}/${StageName}/DELETE/@connections/*"\n',
        "@connections: only POST and DELETE are granted"),
    "DescribeTable granted again": (
        "                  - dynamodb:Scan\n", "                  - dynamodb:Scan\n                  - dynamodb:DescribeTable\n",
        "DynamoDB: only the store's calls (no DescribeTable)"),
    "the old SharedSecret pattern (any printable ASCII)": (
        "    AllowedPattern: '^[A-Za-z0-9!#$%&()*+./:;<=>?@^_{|}~\\[\\]-]{16,}$'\n", '    AllowedPattern: "^[!-~]+$"\n',
        "SharedSecret refuses space \" ' , \\ and backtick"),
    "OidcIssuer without a pattern": (
        "    AllowedPattern: '^(oidc\\.eks\\.[a-z0-9-]+\\.amazonaws\\.com(\\.cn)?/id/[A-Za-z0-9]+)?$'\n", "",
        "OidcIssuer refuses https:// and malformed issuers"),
    "the KEDA role scoped to a resource GetMetricData does not support": (
        '                Resource: "*"\n', '                Resource: !Sub "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:*"\n',
        "KEDA role grants cloudwatch:GetMetricData on * (no resource-level support)"),
    "the sessions table without deletion protection": (
        "      DeletionProtectionEnabled: true\n", "",
        "the sessions table: deletion protection, DeletionPolicy and UpdateReplacePolicy Retain"),
    "the sessions table deleted with the stack": (
        "    DeletionPolicy: Retain\n    UpdateReplacePolicy: Retain\n    Properties:\n      TableName:",
        "    Properties:\n      TableName:",
        "the sessions table: deletion protection, DeletionPolicy and UpdateReplacePolicy Retain"),
    "a KEDA parameter without a Default": (
        "    Default: keda-operator\n", "",
        "every parameter but IntegrationUri and SharedSecret has a Default (the local gateway needs it)"),
}


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else TEMPLATE
    text = open(path).read()
    tally = Tally("cfn-py")
    report = tally.check

    for name, (ok, detail) in checks(yaml.load(text, Loader=Loader)).items():
        report(name, bool(ok), detail)
    if path == TEMPLATE:
        for name, (old, new, expect) in MUTATIONS.items():
            if text.count(old) != 1:
                report(f"mutation {name}", False, "did not apply")
                continue
            result = checks(yaml.load(text.replace(old, new), Loader=Loader))
            report(f"mutation {name} fails \"{expect}\"", not result[expect][0])
    tally.finish()


if __name__ == "__main__":
    main()
