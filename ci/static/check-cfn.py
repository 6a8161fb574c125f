#!/usr/bin/env python3
"""Checks on cfn/websocket-api.yml that cfn-lint cannot make: least-privilege grants, the
SharedSecret, OidcIssuer and AuthorizerFunctionArn patterns against concrete values, the KEDA
role, the parameters the local gateway needs, and the optional $connect authorizer (off by
default; on with AuthorizerFunctionArn, read from the template as CloudFormation would create it
with that parameter). Then it proves the checks bite: each mutation below puts back an older,
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
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:socketless-authorizer"
AUTHORIZER_ARN_OK = ["", FUNCTION_ARN, FUNCTION_ARN + ":live", FUNCTION_ARN + ":$LATEST", FUNCTION_ARN + ":7",
                     "arn:aws-cn:lambda:cn-north-1:123456789012:function:auth"]
AUTHORIZER_ARN_BAD = ["socketless-authorizer", "arn:aws:lambda:us-east-1:123456789012:function:",
                      "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/" + FUNCTION_ARN + "/invocations",
                      "arn:aws:iam::123456789012:role/authorizer", " " + FUNCTION_ARN]
AUTHORIZER_URI = ("arn:${AWS::Partition}:apigateway:${AWS::Region}:lambda:path/2015-03-31/functions/"
                  "${AuthorizerFunctionArn}/invocations")
AUTHORIZER_SOURCE_ARN = "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${Api}/authorizers/${ConnectAuthorizer}"
PRINCIPAL_HEADER = "integration.request.header.x-socketless-principal-id"
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


class Deployed:
    """The template as CloudFormation creates it with the given parameter values (the rest take
    their Default): resources whose Condition is false dropped, Fn::If and Condition resolved,
    AWS::NoValue removed. Other intrinsic functions (Ref to a resource, Fn::Sub, Fn::GetAtt) are
    left as written, so a check can compare them with the text it expects."""

    NO_VALUE = object()

    def __init__(self, t, **given):
        self.params = {k: str(given.get(k, v.get("Default", ""))) for k, v in t["Parameters"].items()}
        self.raw_conditions = t.get("Conditions", {})
        self.conditions = {}
        self.resources = {}
        for rid, r in t["Resources"].items():
            if "Condition" in r and not self.condition(r["Condition"]):
                continue
            r = dict(r)
            r["Properties"] = self.resolve(r.get("Properties", {}))
            self.resources[rid] = r

    def condition(self, name):
        if name not in self.conditions:
            self.conditions[name] = bool(self.value(self.raw_conditions[name]))
        return self.conditions[name]

    def value(self, v):
        """A condition's operands: parameters and literals."""
        if isinstance(v, dict) and len(v) == 1:
            (k, a), = v.items()
            if k == "Ref":
                return self.params[a] if a in self.params else v
            if k == "Condition":
                return self.condition(a)
            if k == "Fn::Equals":
                return str(self.value(a[0])) == str(self.value(a[1]))
            if k == "Fn::Not":
                return not self.value(a[0])
            if k == "Fn::And":
                return all(self.value(c) for c in a)
            if k == "Fn::Or":
                return any(self.value(c) for c in a)
        return v

    def resolve(self, v):
        if isinstance(v, dict):
            if len(v) == 1 and "Fn::If" in v:
                name, then, other = v["Fn::If"]
                return self.resolve(then if self.condition(name) else other)
            if v == {"Ref": "AWS::NoValue"}:
                return self.NO_VALUE
            out = {k: self.resolve(x) for k, x in v.items()}
            return {k: x for k, x in out.items() if x is not self.NO_VALUE}
        if isinstance(v, list):
            return [x for x in (self.resolve(i) for i in v) if x is not self.NO_VALUE]
        return v

    def of_type(self, ty):
        return {rid: r["Properties"] for rid, r in self.resources.items() if r["Type"] == ty}

    def route(self, key):
        return next((p for p in self.of_type("AWS::ApiGatewayV2::Route").values() if p.get("RouteKey") == key), {})


def authorizer_checks(t):
    """The optional $connect authorizer: absent with the defaults; complete with
    AuthorizerFunctionArn (and every optional integration and route turned on)."""
    out = {}
    ap = t["Parameters"].get("AuthorizerFunctionArn", {})
    pattern = ap.get("AllowedPattern", ".*")
    out["AuthorizerFunctionArn accepts empty and function ARNs (version, alias, aws-cn)"] = (
        all(matches(pattern, v) for v in AUTHORIZER_ARN_OK), pattern)
    out["AuthorizerFunctionArn refuses a bare name, an invocation URI, other ARNs"] = (
        not any(matches(pattern, v) for v in AUTHORIZER_ARN_BAD), pattern)

    off = Deployed(t)
    present = sorted(rid for rid, r in off.resources.items()
                     if r["Type"] in ("AWS::ApiGatewayV2::Authorizer", "AWS::Lambda::Permission"))
    out["authorizer off by default: no Authorizer, no Lambda permission"] = (
        ap.get("Default") == "" and not present, present)
    connect = off.route("$connect")
    mapped = sorted(rid for rid, p in off.of_type("AWS::ApiGatewayV2::Integration").items()
                    if PRINCIPAL_HEADER in p.get("RequestParameters", {}))
    out["authorizer off by default: $connect is NONE, no AuthorizerId, no principal header"] = (
        connect.get("AuthorizationType") == "NONE" and "AuthorizerId" not in connect and not mapped,
        {"connect": connect.get("AuthorizationType"), "AuthorizerId": connect.get("AuthorizerId"), "mapped": mapped})

    on = Deployed(t, AuthorizerFunctionArn=FUNCTION_ARN, ConformanceMapping="true", DisconnectContext="true")
    authorizers = on.of_type("AWS::ApiGatewayV2::Authorizer")
    auth = authorizers.get("ConnectAuthorizer", {})
    out["authorizer on: one REQUEST authorizer, ?token= identity source, URI from the function ARN"] = (
        list(authorizers) == ["ConnectAuthorizer"] and auth.get("ApiId") == {"Ref": "Api"}
        and auth.get("AuthorizerType") == "REQUEST"
        and auth.get("IdentitySource") == ["route.request.querystring.token"]
        and auth.get("AuthorizerUri") == {"Fn::Sub": AUTHORIZER_URI}, authorizers)
    routes = on.of_type("AWS::ApiGatewayV2::Route")
    authorized = {p.get("RouteKey"): (p.get("AuthorizationType"), p.get("AuthorizerId")) for p in routes.values()}
    others = {k: v for k, v in authorized.items() if k != "$connect" and v != ("NONE", None)}
    out["authorizer on: $connect is CUSTOM with ConnectAuthorizer, no other route authorized"] = (
        authorized.get("$connect") == ("CUSTOM", {"Ref": "ConnectAuthorizer"}) and not others, authorized)
    perms = on.of_type("AWS::Lambda::Permission")
    out["authorizer on: apigateway.amazonaws.com may invoke the function, from this API's authorizer only"] = (
        list(perms.values()) == [{"Action": "lambda:InvokeFunction", "FunctionName": {"Ref": "AuthorizerFunctionArn"},
                                  "Principal": "apigateway.amazonaws.com",
                                  "SourceArn": {"Fn::Sub": AUTHORIZER_SOURCE_ARN}}], perms)
    integrations = on.of_type("AWS::ApiGatewayV2::Integration")
    targets = {p.get("Target", {}).get("Fn::Sub", "") for p in routes.values()}
    unmapped = sorted(rid for rid, p in integrations.items()
                      if p.get("RequestParameters", {}).get(PRINCIPAL_HEADER) != "context.authorizer.principalId")
    out["authorizer on: context.authorizer.principalId on x-socketless-principal-id in every integration"] = (
        len(integrations) >= 3 and targets == {f"integrations/${{{rid}}}" for rid in integrations} and not unmapped,
        {"unmapped": unmapped, "targets": sorted(targets)})
    return out


def checks(t):
    """{check name: (ok, detail)} for one parsed template."""
    out = authorizer_checks(t)
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

    groups = res.get("GroupsTable", {})
    gp = groups.get("Properties", {})
    index = (gp.get("GlobalSecondaryIndexes") or [{}])[0]
    out["the groups table: keys, KEYS_ONLY byConnection index, TTL, Retain and deletion protection"] = (
        [k["AttributeName"] for k in gp.get("KeySchema", [])] == ["group", "connectionId"]
        and index.get("IndexName") == "byConnection"
        and [k["AttributeName"] for k in index.get("KeySchema", [])] == ["connectionId", "group"]
        and index.get("Projection", {}).get("ProjectionType") == "KEYS_ONLY"
        and gp.get("TimeToLiveSpecification", {}).get("AttributeName") == "expiresAt"
        and gp.get("BillingMode") == "PAY_PER_REQUEST" and gp.get("DeletionProtectionEnabled") is True
        and groups.get("DeletionPolicy") == "Retain" and groups.get("UpdateReplacePolicy") == "Retain",
        gp)
    gactions = sorted(backend.get("Groups", {}).get("Action", []))
    gresources = [as_text(r) for r in backend.get("Groups", {}).get("Resource", [])]
    out["groups: only PutItem, DeleteItem, Query, BatchWriteItem, on the table and its index"] = (
        gactions == sorted(["dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Query", "dynamodb:BatchWriteItem"])
        and len(gresources) == 2 and "GroupsTableName" in t.get("Outputs", {}), (gactions, gresources))

    account = [r for r in res.values() if r["Type"] == "AWS::ApiGateway::Account"]
    out["the account's API Gateway CloudWatch role can be set (optional)"] = (
        len(account) == 1 and account[0].get("Condition") and "CloudWatchRoleArn" in account[0]["Properties"], account)

    no_default = sorted(k for k, v in params.items() if "Default" not in v)
    out["every parameter but IntegrationUri and SharedSecret has a Default (the local gateway needs it)"] = (
        no_default == ["IntegrationUri", "SharedSecret"], no_default)
    bad_defaults = [k for k, v in params.items() if "Default" in v and "AllowedPattern" in v and not matches(v["AllowedPattern"], str(v["Default"]))]
    out["every Default matches its AllowedPattern"] = (not bad_defaults, bad_defaults)
    # With the defaults, as the gateway loads the template unless told otherwise.
    v2 = sorted({r["Type"] for r in Deployed(t).resources.values() if r["Type"].startswith("AWS::ApiGatewayV2::")} - GATEWAY_TYPES)
    out["with the defaults, only ApiGatewayV2 types socketless gateway emulates"] = (not v2, v2)
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
        "      TableName: !Ref TableName\n      DeletionProtectionEnabled: true\n", "      TableName: !Ref TableName\n",
        "the sessions table: deletion protection, DeletionPolicy and UpdateReplacePolicy Retain"),
    "the sessions table deleted with the stack": (
        "    DeletionPolicy: Retain\n    UpdateReplacePolicy: Retain\n    Properties:\n      TableName: !Ref",
        "    Properties:\n      TableName: !Ref",
        "the sessions table: deletion protection, DeletionPolicy and UpdateReplacePolicy Retain"),
    "Scan granted on the groups table": (
        "                  - dynamodb:BatchWriteItem\n", "                  - dynamodb:BatchWriteItem\n                  - dynamodb:Scan\n",
        "groups: only PutItem, DeleteItem, Query, BatchWriteItem, on the table and its index"),
    "the groups table deleted with the stack": (
        "    DeletionPolicy: Retain\n    UpdateReplacePolicy: Retain\n    Properties:\n      TableName: !Sub",
        "    Properties:\n      TableName: !Sub",
        "the groups table: keys, KEYS_ONLY byConnection index, TTL, Retain and deletion protection"),
    "the groups index projecting every attribute": (
        "            ProjectionType: KEYS_ONLY\n", "            ProjectionType: ALL\n",
        "the groups table: keys, KEYS_ONLY byConnection index, TTL, Retain and deletion protection"),
    "a KEDA parameter without a Default": (
        "    Default: keda-operator\n", "",
        "every parameter but IntegrationUri and SharedSecret has a Default (the local gateway needs it)"),
    "the authorizer without its Condition": (
        "    Type: AWS::ApiGatewayV2::Authorizer\n    Condition: UseConnectAuthorizer\n", "    Type: AWS::ApiGatewayV2::Authorizer\n",
        "authorizer off by default: no Authorizer, no Lambda permission"),
    "the Lambda permission without its Condition": (
        "    Type: AWS::Lambda::Permission\n    Condition: UseConnectAuthorizer\n", "    Type: AWS::Lambda::Permission\n",
        "authorizer off by default: no Authorizer, no Lambda permission"),
    "an authorizer function by default": (
        '  AuthorizerFunctionArn:\n    Type: String\n    Default: ""\n',
        f'  AuthorizerFunctionArn:\n    Type: String\n    Default: "{FUNCTION_ARN}"\n',
        "authorizer off by default: no Authorizer, no Lambda permission"),
    "$connect always CUSTOM": (
        "      AuthorizationType: !If [UseConnectAuthorizer, CUSTOM, NONE]\n", "      AuthorizationType: CUSTOM\n",
        "authorizer off by default: $connect is NONE, no AuthorizerId, no principal header"),
    "the principal mapped with the authorizer off": (
        f'{PRINCIPAL_HEADER}: !If [UseConnectAuthorizer, context.authorizer.principalId, !Ref "AWS::NoValue"]\n\n  ConnectRoute:',
        f'{PRINCIPAL_HEADER}: context.authorizer.principalId\n\n  ConnectRoute:',
        "authorizer off by default: $connect is NONE, no AuthorizerId, no principal header"),
    "$connect never authorized": (
        "      AuthorizationType: !If [UseConnectAuthorizer, CUSTOM, NONE]\n", "      AuthorizationType: NONE\n",
        "authorizer on: $connect is CUSTOM with ConnectAuthorizer, no other route authorized"),
    "$connect CUSTOM without its authorizer": (
        '      AuthorizerId: !If [UseConnectAuthorizer, !Ref ConnectAuthorizer, !Ref "AWS::NoValue"]\n', "",
        "authorizer on: $connect is CUSTOM with ConnectAuthorizer, no other route authorized"),
    "$default authorized too": (
        "      RouteKey: $default\n      AuthorizationType: NONE\n",
        "      RouteKey: $default\n      AuthorizationType: !If [UseConnectAuthorizer, CUSTOM, NONE]\n",
        "authorizer on: $connect is CUSTOM with ConnectAuthorizer, no other route authorized"),
    "the token from a header instead of ?token=": (
        "        - route.request.querystring.token\n", "        - route.request.header.Authorization\n",
        "authorizer on: one REQUEST authorizer, ?token= identity source, URI from the function ARN"),
    "the authorizer URI in the wrong service": (
        '      AuthorizerUri: !Sub "arn:${AWS::Partition}:apigateway:', '      AuthorizerUri: !Sub "arn:${AWS::Partition}:apigateway-bad:',
        "authorizer on: one REQUEST authorizer, ?token= identity source, URI from the function ARN"),
    "the permission open to every API in the account": (
        f'      SourceArn: !Sub "{AUTHORIZER_SOURCE_ARN}"\n',
        '      SourceArn: !Sub "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:*"\n',
        "authorizer on: apigateway.amazonaws.com may invoke the function, from this API's authorizer only"),
    "the permission without a SourceArn": (
        f'      SourceArn: !Sub "{AUTHORIZER_SOURCE_ARN}"\n', "",
        "authorizer on: apigateway.amazonaws.com may invoke the function, from this API's authorizer only"),
    "the principal not mapped on $default and custom routes": (
        f'{PRINCIPAL_HEADER}: !If [UseConnectAuthorizer, context.authorizer.principalId, !Ref "AWS::NoValue"]\n\n  ConnectRoute:',
        "\n  ConnectRoute:",
        "authorizer on: context.authorizer.principalId on x-socketless-principal-id in every integration"),
    "the principal not mapped on $disconnect": (
        f'        {PRINCIPAL_HEADER}: !If [UseConnectAuthorizer, context.authorizer.principalId, !Ref "AWS::NoValue"]\n'
        '        integration.request.header.x-socketless-disconnect-status:',
        "        integration.request.header.x-socketless-disconnect-status:",
        "authorizer on: context.authorizer.principalId on x-socketless-principal-id in every integration"),
    "the principal not mapped on $connect": (
        f'        {PRINCIPAL_HEADER}: !If [UseConnectAuthorizer, context.authorizer.principalId, !Ref "AWS::NoValue"]\n'
        '        integration.request.header.x-socketless-conformance-connect:',
        "        integration.request.header.x-socketless-conformance-connect:",
        "authorizer on: context.authorizer.principalId on x-socketless-principal-id in every integration"),
    "AuthorizerFunctionArn without a pattern": (
        "    AllowedPattern: '^(arn:aws[a-z-]*:lambda:", "    X-AllowedPattern: '^(arn:aws[a-z-]*:lambda:",
        "AuthorizerFunctionArn refuses a bare name, an invocation URI, other ARNs"),
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
